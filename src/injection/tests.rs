use super::patch::JsonPatch;
use super::*;
use crate::crd::{ContainerSettings, WorkerPool, WorkerPoolSpec};
use crate::vocab::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) const RUN_ID: &str = "01jtest00000000000000000000";

pub(super) fn injector() -> Injector {
    Injector::with_run_ids(ClusterFacts::default(), || RUN_ID.to_string())
}

pub(super) fn container_injector() -> Injector {
    Injector::with_run_ids(
        ClusterFacts {
            sidecar_mode: SidecarMode::Container,
        },
        || RUN_ID.to_string(),
    )
}

pub(super) fn pool(name: &str, spec: WorkerPoolSpec) -> StaticPools {
    let mut p = WorkerPool::new(name, spec);
    p.metadata.namespace = Some("ci".into());
    StaticPools::new(vec![p])
}

pub(super) fn builders() -> StaticPools {
    pool("builders", WorkerPoolSpec::default())
}

pub(super) fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/admission-review/v1.36/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub(super) fn fixture_object(name: &str) -> Value {
    fixture(name)["request"]["object"].clone()
}

/// Who sent a captured request, as the webhook sees it.
pub(super) fn fixture_requester(name: &str) -> Requester {
    let user = fixture(name)["request"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    TrustedUsers::default().requester(&user)
}

pub(super) fn run_pod(containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            labels: Some(BTreeMap::from([(LABEL_POOL.into(), "builders".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn worker(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

pub(super) fn mutated_pod(outcome: Result<Mutation<Pod>, InjectError>) -> Pod {
    match outcome.expect("allowed") {
        Mutation::Mutated { object, .. } => *object,
        other => panic!("expected a mutation, got {other:?}"),
    }
}

pub(super) fn mutated_job(outcome: Result<Mutation<Job>, InjectError>) -> Job {
    match outcome.expect("allowed") {
        Mutation::Mutated { object, .. } => *object,
        other => panic!("expected a mutation, got {other:?}"),
    }
}

/// Applies `patch` to the raw object and checks it gives the engine's object.
pub(super) fn assert_patch_reproduces<
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
>(
    raw: &Value,
    patch: &JsonPatch,
    object: &T,
) {
    let mut applied = raw.clone();
    let patch = patch.operations().expect("the patch is a JSON Patch");
    json_patch::patch(&mut applied, &patch).expect("patch applies to the raw object");
    let typed: T = serde_json::from_value(applied).expect("patched object deserialises");
    assert_eq!(&typed, object);
}

pub(super) fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("spec")
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

#[test]
fn every_v1_36_create_fixture_patches_cleanly_and_converges() {
    for name in [
        "00-job-create-build-42.json",
        "06-job-create-tf-plan-1234.json",
    ] {
        let raw = fixture_object(name);
        let job: Job = serde_json::from_value(raw.clone()).expect("Job");
        let pools = StaticPools::default_pool();
        match injector().mutate(&job, "ci", &pools).expect(name) {
            Mutation::Mutated { object, patch } => {
                assert_patch_reproduces(&raw, &patch, &*object);
                assert_eq!(
                    injector().mutate(&*object, "ci", &pools),
                    Ok(Mutation::Unchanged),
                    "{name}: second pass"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    for name in [
        "02-pod-create-build-42.json",
        "03-pod-create-bare-run.json",
        "04-pod-create-dry.json",
        "05-pod-create-with-sidecar.json",
    ] {
        let raw = fixture_object(name);
        let pod: Pod = serde_json::from_value(raw.clone()).expect("Pod");
        let by = fixture_requester(name);
        match injector()
            .mutate_as(pod, "ci", &builders(), by)
            .expect(name)
        {
            Mutation::Mutated { object, patch } => {
                assert_patch_reproduces(&raw, &patch, &*object);
                assert_eq!(
                    injector().mutate_as(*object, "ci", &builders(), by),
                    Ok(Mutation::Unchanged)
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn job_is_queued_stamped_and_its_template_injected() {
    let raw = fixture_object("06-job-create-tf-plan-1234.json");
    let job: Job = serde_json::from_value(raw).expect("Job");
    let pools = pool("terraform", WorkerPoolSpec::default());
    let new = mutated_job(injector().mutate(&job, "ci", &pools));
    let spec = new.spec.as_ref().expect("spec");
    assert_eq!(spec.suspend, Some(true));
    assert_eq!(label(&new.metadata, LABEL_RUN_ID), Some(RUN_ID));
    let tmeta = spec.template.metadata.as_ref().expect("template metadata");
    assert_eq!(
        label(tmeta, LABEL_POOL),
        Some("terraform"),
        "pool label reaches the pods"
    );
    assert_eq!(label(tmeta, LABEL_RUN_ID), Some(RUN_ID));
    assert_eq!(label(tmeta, "app"), Some("tf"), "user labels kept");
    assert!(is_injected(tmeta));
    let pspec = spec.template.spec.as_ref().expect("pod spec");
    let inits: Vec<_> = pspec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["init", "launcher", "fetch-secrets"]);
    assert!(
        pspec.scheduling_gates.is_none(),
        "Job pods are queued by suspend, not gates"
    );
}

#[test]
fn a_users_worker_label_is_dropped_and_the_job_queued() {
    let raw = fixture_object("00-job-create-build-42.json");
    let mut job: Job = serde_json::from_value(raw).expect("Job");
    let spec = job.spec.as_mut().expect("spec");
    spec.suspend = Some(false);
    for meta in [
        &mut job.metadata,
        job.spec
            .as_mut()
            .and_then(|s| s.template.metadata.as_mut())
            .expect("template"),
    ] {
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(LABEL_WORKER.into(), "builders-01".into());
        meta.annotations
            .get_or_insert_with(Default::default)
            .extend([
                (ANNOTATION_CLAIMED_AT.into(), "2099-01-01T00:00:00Z".into()),
                (ANNOTATION_RESULT.into(), "Succeeded".into()),
            ]);
    }
    let new = mutated_job(injector().mutate(&job, "ci", &builders()));
    let spec = new.spec.as_ref().expect("spec");
    assert_eq!(spec.suspend, Some(true), "queued");
    let tmeta = spec.template.metadata.as_ref().expect("template");
    for meta in [&new.metadata, tmeta] {
        assert_eq!(label(meta, LABEL_WORKER), None, "forged claim removed");
        assert_eq!(annotation(meta, ANNOTATION_CLAIMED_AT), None);
        assert_eq!(annotation(meta, ANNOTATION_RESULT), None);
    }

    // The controller's own request keeps its claim.
    let new = mutated_job(injector().mutate_as(job, "ci", &builders(), Requester::Controller));
    assert_eq!(new.spec.as_ref().expect("spec").suspend, Some(false));
    assert_eq!(label(&new.metadata, LABEL_WORKER), Some("builders-01"));
}

#[test]
fn template_pool_label_must_match() {
    let raw = fixture_object("00-job-create-build-42.json");
    let mut job: Job = serde_json::from_value(raw).expect("Job");
    let tmeta = job
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .expect("template metadata");
    tmeta
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_POOL.into(), "other".into());
    let err = injector()
        .mutate(&job, "ci", &builders())
        .expect_err("mismatch");
    assert!(matches!(err, InjectError::PoolLabelMismatch { .. }));
}

#[test]
fn pods_from_an_injected_template_need_no_change() {
    let raw = fixture_object("00-job-create-build-42.json");
    let job: Job = serde_json::from_value(raw).expect("Job");
    let new = mutated_job(injector().mutate(&job, "ci", &builders()));
    let template = new.spec.expect("spec").template;
    let mut pod = Pod {
        metadata: template.metadata.expect("metadata"),
        spec: template.spec,
        ..Default::default()
    };
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: "build-42".into(),
        uid: "u".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    assert_eq!(
        injector().mutate_as(pod.clone(), "ci", &builders(), Requester::JobController),
        Ok(Mutation::Unchanged)
    );
    // Only the Job controller creates a Job's pods.
    let err = injector()
        .mutate(&pod, "ci", &builders())
        .expect_err("a user's pod claiming a Job owner");
    assert!(matches!(err, InjectError::ControllerOwned { .. }), "{err}");
}

#[test]
fn injected_annotation_does_not_bypass_the_image_policy() {
    let mut pod = run_pod(vec![worker("w", "evil.example/x:1")]);
    pod.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_INJECTED.into(),
        "true".into(),
    )]));
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        },
    );
    let err = injector().mutate(&pod, "ci", &pools).expect_err("denied");
    assert!(
        matches!(err, InjectError::ImageHostNotAllowed { .. }),
        "{err}"
    );
}

#[test]
fn bare_pod_is_gated_and_job_pod_is_not() {
    let raw = fixture_object("03-pod-create-bare-run.json");
    let pod: Pod = serde_json::from_value(raw).expect("Pod");
    let new = mutated_pod(injector().mutate(&pod, "ci", &builders()));
    let gates: Vec<_> = spec(&new)
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(gates, [SCHEDULING_GATE]);

    let name = "02-pod-create-build-42.json";
    let pod: Pod = serde_json::from_value(fixture_object(name)).expect("Pod");
    let by = fixture_requester(name);
    assert_eq!(by, Requester::JobController);
    let new = mutated_pod(injector().mutate_as(pod, "ci", &builders(), by));
    assert!(spec(&new).scheduling_gates.is_none());

    // A worker label a user writes is no claim: removed, and the pod gated.
    let mut claimed = run_pod(vec![worker("w", "alpine")]);
    claimed
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_WORKER.into(), "builders-1".into());
    let new = mutated_pod(injector().mutate(&claimed, "ci", &builders()));
    let gates: Vec<_> = spec(&new)
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(gates, [SCHEDULING_GATE]);
    assert_eq!(label(&new.metadata, LABEL_WORKER), None);
    // The controller's is.
    let new = mutated_pod(injector().mutate_as(claimed, "ci", &builders(), Requester::Controller));
    assert!(spec(&new).scheduling_gates.is_none());
}

#[test]
fn existing_native_sidecar_is_not_rewritten() {
    let raw = fixture_object("05-pod-create-with-sidecar.json");
    let pod: Pod = serde_json::from_value(raw.clone()).expect("Pod");
    let outcome = injector().mutate(&pod, "ci", &builders()).expect("allowed");
    let Mutation::Mutated { object, patch } = outcome else {
        panic!("expected mutation");
    };
    let inits: Vec<_> = spec(&object)
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["init", "launcher", "proxy"]);
    // Our two containers are inserted, never a replace of the whole list.
    let whole_list = patch
        .operations()
        .expect("a JSON Patch")
        .0
        .iter()
        .filter(|op| *op.path() == "/spec/initContainers")
        .count();
    assert_eq!(whole_list, 0, "{patch:?}");
    let proxy = &spec(&object).init_containers.as_ref().expect("inits")[2];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        proxy.image,
        pod.spec
            .as_ref()
            .expect("spec")
            .init_containers
            .as_ref()
            .expect("x")[0]
            .image
    );
}

#[test]
fn container_mode_puts_the_launcher_last_and_shares_the_process_namespace() {
    let pod = run_pod(vec![worker("a", "alpine"), worker("b", "alpine")]);
    let new = mutated_pod(container_injector().mutate(&pod, "ci", &builders()));
    let s = spec(&new);
    let names: Vec<_> = s.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "launcher"]);
    let launcher = &s.containers[2];
    assert_eq!(launcher.restart_policy, None);
    assert_eq!(
        env_value(launcher, "RUNYARD_WORKER_CONTAINERS").and_then(|e| e.value.as_deref()),
        Some("a,b")
    );
    assert_eq!(s.share_process_namespace, Some(true));
    let inits: Vec<_> = s
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["init"]);
}

#[test]
fn run_environment_is_complete() {
    let pod = run_pod(vec![worker("w", "alpine")]);
    let new = mutated_pod(injector().mutate(&pod, "ci", &builders()));
    let s = spec(&new);
    let sc = s.security_context.as_ref().expect("pod security context");
    assert_eq!(sc.run_as_user, Some(RUNYARD_UID));
    assert_eq!(sc.run_as_group, Some(RUNYARD_UID));
    assert_eq!(sc.fs_group, Some(RUNYARD_UID));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let volumes: Vec<_> = s
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [WORKSPACE_VOLUME, BINARIES_CACHE_VOLUME, PODINFO_VOLUME]
    );
    assert_eq!(s.active_deadline_seconds, Some(4200));

    let w = &s.containers[0];
    assert_eq!(
        env_value(w, "RUNYARD_RUN_ID").and_then(|e| e.value.as_deref()),
        Some(RUN_ID)
    );
    assert_eq!(
        env_value(w, "RUNYARD_POOL").and_then(|e| e.value.as_deref()),
        Some("builders")
    );
    let worker_ref = env_value(w, "RUNYARD_WORKER")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(worker_ref, Some("metadata.labels['runyard.dev/worker']"));
    assert!(
        env_value(w, "PATH").is_none(),
        "no tools: the image's PATH is kept"
    );
    let mounts: Vec<_> = w
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&WORKSPACE_PATH) && mounts.contains(&BINARIES_CACHE_PATH));
    let req = w
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(req.get("cpu"), Some(&Quantity("500m".into())));
    assert_eq!(req.get("memory"), Some(&Quantity("200Mi".into())));
    let wsc = w
        .security_context
        .as_ref()
        .expect("worker security context");
    assert_eq!(wsc.allow_privilege_escalation, Some(false));

    for c in s.init_containers.iter().flatten() {
        let sc = c
            .security_context
            .as_ref()
            .expect("injected security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(drop, Some(vec!["ALL".to_string()]));
        assert!(sc.privileged.is_none());
    }
    assert!(is_injected(&new.metadata));
}

#[test]
fn pool_settings_apply_and_run_values_win() {
    let spec_yaml = r#"
allowedRunnerImageHosts: ["ghcr.io", "docker.io"]
pod:
  activeDeadlineSeconds: 600
  terminationGracePeriodSeconds: 90
  serviceAccountName: runner
  automountServiceAccountToken: false
  securityContext: {runAsUser: 1000680000}
  nodeSelector: {pool: ci, zone: a}
  tolerations: [{key: ci, operator: Exists}]
  labels: {team: platform, app: pool-default}
  annotations: {cost-center: "42"}
  customBinariesPath: /opt/tools/bin
  imagePullSecrets: [{name: regcred}]
  launcherImage: registry.local/runyard:dev
  customInitContainers: [{name: setup, image: registry.local/setup:1}]
  additionalSidecarContainers: [{name: dind, image: registry.local/dind:1}]
  volumes: [{name: cache, emptyDir: {}}]
  workspaceVolume: {name: ignored, emptyDir: {medium: Memory}}
  workerContainer:
    resources: {requests: {cpu: "2", memory: 4Gi}}
    env: [{name: HTTP_PROXY, value: http://proxy}, {name: MODE, value: pool}]
    volumeMounts: [{name: cache, mountPath: /cache}]
"#;
    let pool_spec: WorkerPoolSpec = serde_norway::from_str(spec_yaml).expect("pool spec");
    let pools = pool("builders", pool_spec);
    let mut w = worker("w", "ghcr.io/acme/x:1");
    w.command = Some(vec!["make".into()]);
    let mut pod = run_pod(vec![w]);
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("app".into(), "mine".into());
    let s = pod.spec.as_mut().expect("spec");
    s.active_deadline_seconds = Some(300);
    s.service_account_name = Some("default".into());
    s.node_selector = Some(BTreeMap::from([("zone".into(), "b".into())]));
    s.containers[0].env = Some(vec![EnvVar {
        name: "MODE".into(),
        value: Some("run".into()),
        ..Default::default()
    }]);
    let new = mutated_pod(injector().mutate(&pod, "ci", &pools));
    let s = spec(&new);
    assert_eq!(
        s.active_deadline_seconds,
        Some(300),
        "shorter run deadline kept"
    );
    assert_eq!(s.termination_grace_period_seconds, Some(90));
    assert_eq!(s.service_account_name.as_deref(), Some("runner"));
    assert_eq!(s.automount_service_account_token, Some(false));
    assert_eq!(
        s.security_context.as_ref().and_then(|c| c.run_as_user),
        Some(1000680000)
    );
    assert_eq!(
        s.security_context.as_ref().and_then(|c| c.fs_group),
        Some(RUNYARD_UID)
    );
    let ns = s.node_selector.as_ref().expect("node selector");
    assert_eq!(ns.get("zone").map(String::as_str), Some("b"), "run wins");
    assert_eq!(ns.get("pool").map(String::as_str), Some("ci"));
    assert_eq!(s.tolerations.as_ref().map(Vec::len), Some(1));
    assert_eq!(label(&new.metadata, "team"), Some("platform"));
    assert_eq!(label(&new.metadata, "app"), Some("mine"));
    assert_eq!(s.image_pull_secrets.as_ref().map(Vec::len), Some(1));
    let inits: Vec<_> = s
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    // The pool's sidecar is a native sidecar after the launcher.
    assert_eq!(inits, ["setup", "init", "launcher", "dind"]);
    assert_eq!(
        s.init_containers.as_ref().expect("inits")[3]
            .restart_policy
            .as_deref(),
        Some("Always")
    );
    assert_eq!(
        s.init_containers.as_ref().expect("inits")[1]
            .image
            .as_deref(),
        Some("registry.local/runyard:dev")
    );
    let names: Vec<_> = s.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["w"]);
    let ws = s
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == WORKSPACE_VOLUME)
        .expect("workspace");
    assert_eq!(
        ws.empty_dir.as_ref().and_then(|e| e.medium.as_deref()),
        Some("Memory")
    );
    let w = &s.containers[0];
    assert_eq!(
        env_value(w, "MODE").and_then(|e| e.value.as_deref()),
        Some("run")
    );
    assert_eq!(
        env_value(w, "HTTP_PROXY").and_then(|e| e.value.as_deref()),
        Some("http://proxy")
    );
    assert!(env_value(w, "PATH").is_none(), "the image's PATH is kept");
    assert_eq!(
        w.command.clone().unwrap_or_default(),
        [
            EXEC_SHIM_PATH,
            "--path-prefix=/opt/tools/bin:/opt/runyard/binaries",
            "--",
            "make"
        ],
        "customBinariesPath, then runyard's binaries, first on PATH"
    );
    let req = w
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(req.get("cpu"), Some(&Quantity("2".into())));
    assert!(w
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == "/cache"));
}

#[test]
fn resources_respect_what_the_run_set() {
    let mut c = worker("w", "alpine");
    c.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("cpu".into(), Quantity("100m".into()))])),
        requests: Some(BTreeMap::from([("memory".into(), Quantity("1Gi".into()))])),
        ..Default::default()
    });
    let new = mutated_pod(injector().mutate(&run_pod(vec![c]), "ci", &builders()));
    let r = spec(&new).containers[0]
        .resources
        .clone()
        .expect("resources");
    let requests = r.requests.expect("requests");
    assert_eq!(
        requests.get("memory"),
        Some(&Quantity("1Gi".into())),
        "kept"
    );
    assert!(
        !requests.contains_key("cpu"),
        "a cpu limit alone: Kubernetes copies it"
    );
}

/// A run pod asking for tools (`runyard.dev/tools`).
fn with_tools(mut pod: Pod) -> Pod {
    pod.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_TOOLS.into(),
        format!("jq=1.7@https://example.com/jq#sha256={}", "a".repeat(64)),
    )]));
    pod
}

fn golang(name: &str, command: Option<&[&str]>) -> Container {
    let mut c = worker(name, "golang:1.22");
    c.command = command.map(|c| c.iter().map(|s| s.to_string()).collect());
    c
}

fn init_env<'a>(pod: &'a Pod, name: &str) -> Option<&'a EnvVar> {
    let init = spec(pod)
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == INIT_CONTAINER)
        .expect("init");
    env_value(init, name)
}

#[test]
fn without_tools_path_and_command_are_the_runs() {
    let pod = run_pod(vec![golang("test", Some(&["go", "test", "./..."]))]);
    let new = mutated_pod(injector().mutate(&pod, "ci", &builders()));
    let c = &spec(&new).containers[0];
    assert!(env_value(c, "PATH").is_none(), "the image's PATH is kept");
    assert_eq!(
        c.command.clone().unwrap_or_default(),
        ["go", "test", "./..."]
    );
    assert!(init_env(&new, env::EXEC_SHIM).is_none());
}

#[test]
fn tools_go_first_on_path_through_the_exec_shim() {
    let pod = with_tools(run_pod(vec![
        golang("test", Some(&["go", "test", "./..."])),
        golang("vet", None),
    ]));
    let new = mutated_pod(injector().mutate(&pod, "ci", &builders()));
    let s = spec(&new);
    let test = &s.containers[0];
    assert!(
        env_value(test, "PATH").is_none(),
        "no PATH in the spec: it would hide the image's"
    );
    assert_eq!(
        test.command.clone().unwrap_or_default(),
        [
            EXEC_SHIM_PATH,
            "--path-prefix=/opt/runyard/binaries",
            "--",
            "go",
            "test",
            "./..."
        ]
    );
    // Without a command the image's entrypoint runs: unknown, left alone.
    let vet = &s.containers[1];
    assert!(vet.command.is_none() && env_value(vet, "PATH").is_none());
    assert_eq!(
        init_env(&new, env::EXEC_SHIM).and_then(|e| e.value.as_deref()),
        Some("true"),
        "init installs the shim"
    );
    // Injecting again changes nothing (the shim is not wrapped twice).
    assert!(matches!(
        injector().mutate(&new, "ci", &builders()),
        Ok(Mutation::Unchanged)
    ));
}

#[test]
fn a_declared_path_gets_the_prefix_once() {
    let mut c = golang("w", Some(&["go", "build"]));
    c.env = Some(vec![EnvVar {
        name: "PATH".into(),
        value: Some("/custom/bin:/usr/bin".into()),
        ..Default::default()
    }]);
    let new = mutated_pod(injector().mutate(&with_tools(run_pod(vec![c])), "ci", &builders()));
    let w = &spec(&new).containers[0];
    let path = env_value(w, "PATH")
        .and_then(|e| e.value.clone())
        .expect("PATH");
    assert_eq!(path, "/opt/runyard/binaries:/custom/bin:/usr/bin");
    assert_eq!(
        w.command.clone().unwrap_or_default(),
        ["go", "build"],
        "no shim needed"
    );
    assert!(matches!(
        injector().mutate(&new, "ci", &builders()),
        Ok(Mutation::Unchanged)
    ));
}

#[test]
fn pool_tools_count_and_a_runs_empty_tools_win() {
    let mut pool_spec = WorkerPoolSpec::default();
    pool_spec.pod.annotations = BTreeMap::from([(
        ANNOTATION_TOOLS.into(),
        format!("jq=1.7@https://example.com/jq#sha256={}", "a".repeat(64)),
    )]);
    let pools = pool("builders", pool_spec);
    let pod = run_pod(vec![golang("w", Some(&["go", "build"]))]);
    let new = mutated_pod(injector().mutate(&pod, "ci", &pools));
    assert_eq!(
        spec_of_first_command(&new).first().map(String::as_str),
        Some(EXEC_SHIM_PATH)
    );
    let mut pod = pod;
    pod.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_TOOLS.into(), String::new())]));
    let new = mutated_pod(injector().mutate(&pod, "ci", &pools));
    assert_eq!(spec_of_first_command(&new), ["go", "build"]);
}

fn spec_of_first_command(pod: &Pod) -> Vec<String> {
    spec(pod).containers[0].command.clone().unwrap_or_default()
}

#[test]
fn collisions_are_denied_not_overwritten() {
    let err = injector()
        .mutate(
            &run_pod(vec![worker("launcher", "alpine")]),
            "ci",
            &builders(),
        )
        .expect_err("container collision");
    assert!(
        matches!(
            err,
            InjectError::NameCollision {
                kind: "container",
                ..
            }
        ),
        "{err}"
    );

    let mut pod = run_pod(vec![worker("w", "alpine")]);
    pod.spec.as_mut().expect("spec").volumes = Some(vec![Volume {
        name: "workspace".into(),
        ..Default::default()
    }]);
    let err = injector()
        .mutate(&pod, "ci", &builders())
        .expect_err("volume collision");
    assert!(
        matches!(err, InjectError::NameCollision { kind: "volume", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rename it"));

    let mut c = worker("w", "alpine");
    c.volume_mounts = Some(vec![VolumeMount {
        name: "data".into(),
        mount_path: WORKSPACE_PATH.into(),
        ..Default::default()
    }]);
    let err = injector()
        .mutate(&run_pod(vec![c]), "ci", &builders())
        .expect_err("mount collision");
    assert!(matches!(err, InjectError::MountCollision { .. }), "{err}");
}

#[test]
fn pool_must_exist_in_the_namespace() {
    let pod = run_pod(vec![worker("w", "alpine")]);
    let err = injector()
        .mutate(&pod, "other-ns", &builders())
        .expect_err("missing pool");
    assert_eq!(
        err,
        InjectError::PoolNotFound {
            pool: "builders".into(),
            namespace: "other-ns".into()
        }
    );
    assert!(err
        .to_string()
        .contains("does not exist in namespace \"other-ns\""));
}

#[test]
fn image_hosts_are_enforced_with_docker_hub_normalisation() {
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        },
    );
    let err = injector()
        .mutate(&run_pod(vec![worker("w", "alpine")]), "ci", &pools)
        .expect_err("docker hub not allowed");
    assert!(err.to_string().contains("\"docker.io\""), "{err}");
    assert!(injector()
        .mutate(&run_pod(vec![worker("w", "ghcr.io/a/b:1")]), "ci", &pools)
        .is_ok());
    // The launcher image is the pool's own and never checked.
    let new =
        mutated_pod(injector().mutate(&run_pod(vec![worker("w", "ghcr.io/a/b:1")]), "ci", &pools));
    assert!(injector().mutate(&new, "ci", &pools).is_ok());
}

/// Issue 11.6: containers other webhooks add after runyard (on
/// reinvocation) may use `allowedSidecarImages` images from hosts the pool
/// does not allow; they are not workers (left untouched, not waited for) and
/// still held to the privilege policy. A run's own container from a
/// disallowed host is still denied.
#[test]
fn other_webhooks_containers_pass_with_allowed_sidecar_images_only() {
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            allowed_sidecar_images: vec!["docker.io/istio/proxyv2".into(), "gcr.io/mesh/*".into()],
            ..Default::default()
        },
    );
    let injected =
        mutated_pod(injector().mutate(&run_pod(vec![worker("w", "ghcr.io/a/b:1")]), "ci", &pools));
    // The mesh's webhook adds its proxy (native sidecar) and an agent.
    let mut meshed = injected.clone();
    let spec = meshed.spec.as_mut().expect("spec");
    let proxy = Container {
        restart_policy: Some("Always".into()),
        security_context: Some(SecurityContext {
            run_as_user: Some(1337),
            ..Default::default()
        }),
        ..worker("istio-proxy", "docker.io/istio/proxyv2:1.24.0")
    };
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .push(proxy);
    spec.containers.push(worker("agent", "gcr.io/mesh/agent:2"));
    // Reinvoked: nothing to change, the added containers are not workers.
    assert_eq!(
        injector().mutate_as(meshed.clone(), "ci", &pools, Requester::User),
        Ok(Mutation::Unchanged)
    );
    let launcher = spec_of(&meshed)
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "launcher")
        .expect("launcher");
    assert_eq!(
        env_value(launcher, "RUNYARD_WORKER_CONTAINERS").and_then(|e| e.value.as_deref()),
        Some("w")
    );
    // The same containers on a first CREATE are admitted too, untouched.
    let mut first = run_pod(vec![worker("w", "ghcr.io/a/b:1")]);
    first
        .spec
        .as_mut()
        .expect("spec")
        .containers
        .push(worker("agent", "gcr.io/mesh/agent:2"));
    let new = mutated_pod(injector().mutate(&first, "ci", &pools));
    let agent = spec_of(&new)
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("agent");
    assert_eq!(agent, &worker("agent", "gcr.io/mesh/agent:2"));
    // Anything else from a disallowed host is still denied, also on reinvocation.
    for image in [
        "docker.io/istio/proxyv2-evil:1",
        "evil.io/istio/proxyv2:1",
        "alpine",
    ] {
        let mut added = injected.clone();
        added
            .spec
            .as_mut()
            .expect("spec")
            .containers
            .push(worker("sneaky", image));
        let err = injector().mutate(&added, "ci", &pools).expect_err(image);
        assert!(
            matches!(err, InjectError::ImageHostNotAllowed { .. }),
            "{image}: {err}"
        );
    }
    // The privilege policy holds for them.
    let mut privileged = injected.clone();
    privileged
        .spec
        .as_mut()
        .expect("spec")
        .containers
        .push(Container {
            security_context: Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            ..worker("agent", "gcr.io/mesh/agent:2")
        });
    assert!(matches!(
        injector().mutate(&privileged, "ci", &pools),
        Err(InjectError::PrivilegeNotAllowed { .. })
    ));
}

/// Pool sidecars get the `restricted` defaults where they set nothing.
#[test]
fn pool_sidecars_are_hardened_where_they_set_nothing() {
    let mut spec = WorkerPoolSpec::default();
    spec.pod.additional_sidecar_containers = vec![Container {
        command: Some(vec!["redis-server".into()]),
        ..worker("redis", "redis:7.4")
    }];
    let pools = pool("builders", spec);
    let new = mutated_pod(injector().mutate(&run_pod(vec![worker("w", "alpine")]), "ci", &pools));
    let redis = spec_of(&new)
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "redis")
        .expect("redis");
    let sc = redis.security_context.clone().expect("sc");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        injector().mutate(&new, "ci", &pools),
        Ok(Mutation::Unchanged)
    );
}

#[test]
fn privileged_runs_need_an_opt_in() {
    let mut c = worker("w", "alpine");
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let pod = run_pod(vec![c]);
    let err = injector()
        .mutate(&pod, "ci", &builders())
        .expect_err("privileged");
    assert!(
        matches!(err, InjectError::PrivilegeNotAllowed { .. }),
        "{err}"
    );

    let mut host = run_pod(vec![worker("w", "alpine")]);
    host.spec.as_mut().expect("spec").host_network = Some(true);
    assert!(injector().mutate(&host, "ci", &builders()).is_err());

    let mut root = worker("w", "alpine");
    root.security_context = Some(SecurityContext {
        run_as_user: Some(0),
        ..Default::default()
    });
    assert!(injector()
        .mutate(&run_pod(vec![root]), "ci", &builders())
        .is_err());

    let mut spec = WorkerPoolSpec::default();
    spec.pod.allow_privileged = true;
    let new = mutated_pod(injector().mutate(&pod, "ci", &pool("builders", spec)));
    let sc = spec_sc(&new);
    assert_eq!(sc.privileged, Some(true));
    assert_eq!(
        sc.allow_privilege_escalation, None,
        "privileged with allowPrivilegeEscalation=false is invalid"
    );
}

fn spec_sc(pod: &Pod) -> SecurityContext {
    spec(pod).containers[0]
        .security_context
        .clone()
        .expect("security context")
}

#[test]
fn user_security_values_are_kept() {
    let mut c = worker("w", "alpine");
    c.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        read_only_root_filesystem: Some(false),
        ..Default::default()
    });
    let new = mutated_pod(injector().mutate(&run_pod(vec![c]), "ci", &builders()));
    let sc = spec_sc(&new);
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.read_only_root_filesystem, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
}

#[test]
fn non_runs_are_never_touched() {
    let mut pod = run_pod(vec![worker("w", "alpine")]);
    pod.metadata.labels = Some(BTreeMap::from([("app".into(), "x".into())]));
    assert_eq!(
        injector().mutate(&pod, "ci", &builders()),
        Ok(Mutation::NotARun)
    );
    let job = Job::default();
    assert_eq!(
        injector().mutate(&job, "ci", &builders()),
        Ok(Mutation::NotARun)
    );
}

#[test]
fn cluster_versions() {
    assert_eq!(
        ClusterFacts::for_version("1", "29+").map(|f| f.sidecar_mode),
        Ok(SidecarMode::Native)
    );
    assert_eq!(
        ClusterFacts::for_version("1", "28").map(|f| f.sidecar_mode),
        Ok(SidecarMode::Container)
    );
    let err = ClusterFacts::for_version("1", "26").expect_err("too old");
    assert!(err.to_string().contains("1.27 or newer"), "{err}");
    assert!(ClusterFacts::for_version("", "x").is_err());
}

// ---------------------------------------------------------------------------
// Property tests over generated pods.

fn arb_image() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("alpine".to_string()),
        Just("alpine:3.20".to_string()),
        Just("ghcr.io/acme/builder:1".to_string()),
        Just("registry.local:5000/x@sha256:0123".to_string()),
        Just("hashicorp/terraform:1.9".to_string()),
    ]
}

fn arb_quantity_map() -> impl Strategy<Value = Option<BTreeMap<String, Quantity>>> {
    proptest::option::of(proptest::collection::btree_map(
        prop_oneof![Just("cpu".to_string()), Just("memory".to_string())],
        prop_oneof![Just(Quantity("1".into())), Just(Quantity("64Mi".into()))],
        0..3,
    ))
}

pub(super) fn arb_container(prefix: &'static str) -> impl Strategy<Value = Container> {
    (
        0u8..8,
        arb_image(),
        proptest::collection::vec(("[A-Z]{1,3}", "[a-z]{0,4}"), 0..3),
        arb_quantity_map(),
        arb_quantity_map(),
        arb_security(),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(0), Just(8080)]),
    )
        .prop_map(
            move |(n, image, env, requests, limits, security_context, native, host_port)| {
                Container {
                    name: if n == 7 {
                        LAUNCHER_CONTAINER.to_string()
                    } else {
                        format!("{prefix}{n}")
                    },
                    image: Some(image),
                    env: (!env.is_empty()).then(|| {
                        let mut seen = std::collections::BTreeSet::new();
                        env.into_iter()
                            .filter(|(k, _)| seen.insert(k.clone()))
                            .map(|(name, value)| EnvVar {
                                name,
                                value: Some(value),
                                ..Default::default()
                            })
                            .collect()
                    }),
                    resources: (requests.is_some() || limits.is_some()).then(|| {
                        ResourceRequirements {
                            requests,
                            limits,
                            ..Default::default()
                        }
                    }),
                    security_context,
                    ports: host_port.map(|p| {
                        vec![k8s_openapi::api::core::v1::ContainerPort {
                            container_port: 8080,
                            host_port: Some(p),
                            ..Default::default()
                        }]
                    }),
                    restart_policy: (native && prefix == "i").then(|| "Always".to_string()),
                    ..Default::default()
                }
            },
        )
}

/// Security contexts a run may send: nothing, harmless values, the empty
/// `capabilities: {}`, and one of each kind of escape.
fn arb_security() -> impl Strategy<Value = Option<SecurityContext>> {
    use k8s_openapi::api::core::v1::{Capabilities, SELinuxOptions, SeccompProfile};
    let sc = |f: fn(&mut SecurityContext)| {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        Some(sc)
    };
    prop_oneof![
        Just(None),
        Just(sc(|s| s.allow_privilege_escalation = Some(false))),
        Just(sc(|s| s.allow_privilege_escalation = Some(true))),
        Just(sc(|s| s.capabilities = Some(Capabilities::default()))),
        Just(sc(|s| s.capabilities = Some(Capabilities {
            add: Some(vec!["NET_ADMIN".into()]),
            ..Default::default()
        }))),
        Just(sc(|s| s.run_as_group = Some(0))),
        Just(sc(|s| s.run_as_user = Some(1000))),
        Just(sc(|s| s.seccomp_profile = Some(SeccompProfile {
            type_: "Unconfined".into(),
            ..Default::default()
        }))),
        Just(sc(|s| s.proc_mount = Some("Unmasked".into()))),
        Just(sc(|s| s.se_linux_options = Some(SELinuxOptions {
            type_: Some("spc_t".into()),
            ..Default::default()
        }))),
    ]
}

fn dedup_names(mut v: Vec<Container>) -> Vec<Container> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|c| seen.insert(c.name.clone()));
    v
}

fn arb_pod() -> impl Strategy<Value = Pod> {
    (
        // No containers at all is a shape the API server sends too (it
        // validates after admission): the patch must still apply.
        proptest::collection::vec(arb_container("c"), 0..4),
        proptest::collection::vec(arb_container("i"), 0..3),
        proptest::option::of(prop_oneof![Just("builders"), Just("missing")]),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec("[a-z]{1,5}", 0..3),
    )
        .prop_map(|(containers, inits, pool, owned, claimed, volumes)| {
            let mut labels = BTreeMap::new();
            if let Some(p) = pool {
                labels.insert(LABEL_POOL.to_string(), p.to_string());
            }
            if claimed {
                labels.insert(LABEL_WORKER.to_string(), "w-1".to_string());
            }
            let mut volumes: Vec<String> = volumes;
            volumes.sort();
            volumes.dedup();
            Pod {
                metadata: ObjectMeta {
                    generate_name: Some("run-".into()),
                    labels: Some(labels),
                    owner_references: owned.then(|| {
                        vec![OwnerReference {
                            api_version: "batch/v1".into(),
                            kind: "Job".into(),
                            name: "j".into(),
                            uid: "u".into(),
                            controller: Some(true),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    containers: dedup_names(containers),
                    init_containers: (!inits.is_empty()).then(|| dedup_names(inits)),
                    volumes: (!volumes.is_empty()).then(|| {
                        volumes
                            .into_iter()
                            .map(|name| Volume {
                                name,
                                ..Default::default()
                            })
                            .collect()
                    }),
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
}

pub(super) fn arb_requester() -> impl Strategy<Value = Requester> {
    prop_oneof![
        Just(Requester::User),
        Just(Requester::JobController),
        Just(Requester::Controller),
    ]
}

fn arb_facts() -> impl Strategy<Value = Injector> {
    any::<bool>().prop_map(|native| {
        if native {
            injector()
        } else {
            container_injector()
        }
    })
}

fn arb_pools() -> impl Strategy<Value = StaticPools> {
    (any::<bool>(), any::<bool>()).prop_map(|(restrict, settings)| {
        let mut spec = WorkerPoolSpec::default();
        if restrict {
            spec.allowed_runner_image_hosts = vec!["ghcr.io".into(), "docker.io".into()];
        }
        if settings {
            spec.pod.worker_container = Some(ContainerSettings {
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            });
            spec.pod.custom_init_containers = vec![worker("setup", "registry.local/s:1")];
            spec.pod.additional_sidecar_containers = vec![Container {
                command: Some(vec!["serve".into()]),
                ..worker("side", "registry.local/d:1")
            }];
        }
        pool("builders", spec)
    })
}

/// How a pod spec without containers is written: `containers: []`, no
/// `containers` member at all, or `containers: null`. The typed object is the
/// same for all three; the patch must apply to each.
pub(super) fn arb_empty_list_shape() -> impl Strategy<Value = u8> {
    0u8..3
}

/// The JSON the API server would send for `obj`, with an empty
/// `containers` list at `spec` (a pointer) written as `shape` says.
pub(super) fn raw_with_shape<T: Serialize>(obj: &T, spec: &str, shape: u8) -> Value {
    let mut raw = serde_json::to_value(obj).expect("serialise");
    if let Some(spec) = raw.pointer_mut(spec).and_then(Value::as_object_mut) {
        if spec
            .get("containers")
            .is_some_and(|c| c.as_array().is_some_and(Vec::is_empty))
        {
            match shape {
                1 => {
                    spec.remove("containers");
                }
                2 => {
                    spec.insert("containers".into(), Value::Null);
                }
                _ => {}
            }
        }
    }
    raw
}

proptest! {
    #[test]
    fn pod_mutation_is_sound(pod in arb_pod(), inj in arb_facts(), pools in arb_pools(), by in arb_requester(), shape in arb_empty_list_shape()) {
        let raw = raw_with_shape(&pod, "/spec", shape);
        let pod: Pod = serde_json::from_value(raw.clone()).expect("the raw pod is a Pod");
        let owned = controlled_by_job(&pod.metadata);
        match inj.mutate_as(pod.clone(), "ci", &pools, by) {
            Ok(Mutation::NotARun) => prop_assert!(label(&pod.metadata, LABEL_POOL).is_none()),
            Ok(Mutation::Unchanged) => prop_assert!(false, "a fresh run pod always changes"),
            Ok(Mutation::Mutated { object, patch }) => {
                // The patch applies to the original and yields the engine's object.
                let mut applied = raw.clone();
                json_patch::patch(&mut applied, &patch.operations().expect("a JSON Patch")).expect("patch applies");
                let reparsed: Pod = serde_json::from_value(applied).expect("a valid k8s Pod");
                prop_assert_eq!(&reparsed, &*object);
                // A second pass changes nothing, through the webhook path...
                prop_assert_eq!(inj.mutate_as((*object).clone(), "ci", &pools, by), Ok(Mutation::Unchanged));
                // Only the controller's (or, for a Job's pods, the Job
                // controller's) worker label survives; a bare run is gated
                // unless the controller claimed it.
                let trusted = by == Requester::Controller || (owned && by == Requester::JobController);
                let worker = label(&object.metadata, LABEL_WORKER);
                prop_assert_eq!(worker, label(&pod.metadata, LABEL_WORKER).filter(|_| trusted));
                let gated = object.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| g.iter().any(|g| g.name == SCHEDULING_GATE));
                prop_assert_eq!(gated, !owned && worker.is_none());
                // ...and through the engine itself, without the annotation shortcut.
                let mut meta = object.metadata.clone();
                let mut spec = object.spec.clone().expect("spec");
                let pool = pools.pool("ci", "builders").expect("pool");
                let run_id = label(&meta, LABEL_RUN_ID).expect("run id").to_string();
                let gate = spec.scheduling_gates.is_some();
                let ctx = pod::PodContext {
                    pool_name: "builders",
                    pool: &pool.spec,
                    run_id: &run_id,
                    facts: inj.facts,
                    gate,
                    defaults: &inj.defaults,
                };
                pod::inject(&mut meta, &mut spec, &ctx).expect("second pass allowed");
                prop_assert_eq!(&meta, &object.metadata);
                prop_assert_eq!(Some(&spec), object.spec.as_ref());
                // Nothing privileged is injected: no host namespaces, no
                // privileged container, no privilege escalation.
                prop_assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
                // No baseline escape anywhere in the admitted pod, and every
                // container drops capabilities (restricted's default, also
                // where the run sent `capabilities: {}`).
                prop_assert_eq!(policy::pod_escape(object.metadata.annotations.as_ref(), &spec), None);
                for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
                    prop_assert_eq!(policy::container_escape(c), None);
                    let sc = c.security_context.as_ref();
                    prop_assert!(sc.and_then(|s| s.privileged) != Some(true), "{} privileged", c.name);
                    prop_assert!(sc.and_then(|s| s.allow_privilege_escalation) != Some(true), "{} escalates", c.name);
                    let pool_own = pool_volume_or_container(&c.name);
                    let drops = sc.and_then(|s| s.capabilities.as_ref()).and_then(|c| c.drop.as_ref()).is_some_and(|d| !d.is_empty());
                    prop_assert!(pool_own || drops, "{} keeps the default capabilities", c.name);
                }
                // Every container has its requests or limits for cpu and memory.
                for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
                    let r = c.resources.as_ref().expect("resources");
                    for key in ["cpu", "memory"] {
                        let has = r.requests.as_ref().is_some_and(|m| m.contains_key(key))
                            || r.limits.as_ref().is_some_and(|m| m.contains_key(key));
                        prop_assert!(has, "{} lacks {}", c.name, key);
                    }
                }
            }
            Err(InjectError::PoolNotFound { .. }) => {
                prop_assert_eq!(label(&pod.metadata, LABEL_POOL), Some("missing"));
            }
            Err(InjectError::ImageHostNotAllowed { host, .. }) => {
                prop_assert_eq!(host, "registry.local:5000");
            }
            Err(InjectError::NameCollision { name, .. }) => {
                prop_assert!(pool_volume_or_container(&name), "{}", name);
            }
            Err(InjectError::PrivilegeNotAllowed { .. }) => {
                // Denied only for an escape the run itself asked for.
                let spec = pod.spec.as_ref().expect("spec");
                let escapes = spec.init_containers.iter().flatten().chain(&spec.containers)
                    .any(|c| policy::container_escape(c).is_some());
                prop_assert!(escapes);
            }
            Err(InjectError::ControllerOwned { .. }) => {
                prop_assert!(owned && by == Requester::User, "only a user's pod claiming a Job owner");
            }
            Err(e) => prop_assert!(false, "unexpected denial: {}", e),
        }
    }

    #[test]
    fn job_mutation_is_sound(pod in arb_pod(), inj in arb_facts(), pools in arb_pools(), by in arb_requester(), shape in arb_empty_list_shape()) {
        let mut template_meta = pod.metadata.clone();
        template_meta.owner_references = None;
        let job = Job {
            metadata: ObjectMeta {
                name: Some("j".into()),
                labels: pod.metadata.labels.clone(),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::batch::v1::JobSpec {
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(BTreeMap::from([("app".into(), "x".into())])), ..Default::default() }),
                    spec: pod.spec.clone(),
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let raw = raw_with_shape(&job, "/spec/template/spec", shape);
        let job: Job = serde_json::from_value(raw.clone()).expect("the raw job is a Job");
        if let Ok(Mutation::Mutated { object, patch }) = inj.mutate_as(job.clone(), "ci", &pools, by) {
            let mut applied = raw;
            json_patch::patch(&mut applied, &patch.operations().expect("a JSON Patch")).expect("patch applies");
            let reparsed: Job = serde_json::from_value(applied).expect("a valid k8s Job");
            prop_assert_eq!(&reparsed, &*object);
            prop_assert_eq!(inj.mutate_as((*object).clone(), "ci", &pools, by), Ok(Mutation::Unchanged));
            let claimed = by == Requester::Controller && label(&job.metadata, LABEL_WORKER).is_some();
            prop_assert_eq!(object.spec.as_ref().and_then(|s| s.suspend), (!claimed).then_some(true));
        }
    }
}

fn pool_volume_or_container(name: &str) -> bool {
    [
        WORKSPACE_VOLUME,
        BINARIES_CACHE_VOLUME,
        PODINFO_VOLUME,
        INIT_CONTAINER,
        LAUNCHER_CONTAINER,
        "setup",
        "side",
    ]
    .contains(&name)
}

#[test]
fn fixture_sanity_json_value_roundtrip() {
    // The typed round trip of a captured object only drops nulls, never data.
    let raw = fixture_object("02-pod-create-build-42.json");
    let pod: Pod = serde_json::from_value(raw.clone()).expect("Pod");
    let back = serde_json::to_value(&pod).expect("serialise");
    assert_eq!(back["spec"]["containers"], raw["spec"]["containers"]);
    assert_eq!(json!(back["metadata"]["labels"]), raw["metadata"]["labels"]);
}

#[test]
fn install_wide_defaults_apply_and_their_image_is_exempt() {
    let inj = Injector::with_run_ids(ClusterFacts::default(), || RUN_ID.to_string())
        .with_defaults(EngineDefaults::new("mirror.local/runyard:1", "250m", ""));
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        },
    );
    let new = mutated_pod(inj.mutate(&run_pod(vec![worker("w", "ghcr.io/a/b:1")]), "ci", &pools));
    let s = spec(&new);
    let init = &s.init_containers.as_ref().expect("inits")[0];
    assert_eq!(init.image.as_deref(), Some("mirror.local/runyard:1"));
    let req = s.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .expect("requests");
    assert_eq!(req.get("cpu"), Some(&Quantity("250m".into())));
    assert!(
        !req.contains_key("memory"),
        "an empty default sets no request"
    );
    // The mirror image is runyard's own: not subject to the run's host policy.
    assert_eq!(inj.mutate(&new, "ci", &pools), Ok(Mutation::Unchanged));
}

#[test]
fn a_default_worker_image_fills_run_containers_that_name_none() {
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "j", "labels": { LABEL_POOL: "builders" } },
        "spec": { "template": { "spec": {
            "restartPolicy": "Never",
            "initContainers": [{ "name": "prepare", "command": ["true"] }],
            "containers": [
                { "name": "build", "command": ["make"] },
                { "name": "db", "image": "" },
                { "name": "cache", "image": "ghcr.io/acme/redis:7" }
            ]
        } } }
    }))
    .expect("Job");
    let defaults = EngineDefaults::default().with_worker_image(Some("ghcr.io/acme/runner:2"));
    let inj = injector().with_defaults(defaults);
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        },
    );
    let new = mutated_job(inj.mutate(&job, "ci", &pools));
    let pod = new
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    let image = |list: &[Container], name: &str| {
        list.iter()
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    assert_eq!(image(&pod.containers, "build"), "ghcr.io/acme/runner:2");
    assert_eq!(
        image(&pod.containers, "db"),
        "ghcr.io/acme/runner:2",
        "an empty image is none"
    );
    assert_eq!(
        image(&pod.containers, "cache"),
        "ghcr.io/acme/redis:7",
        "a run's image wins"
    );
    let inits = pod.init_containers.clone().unwrap_or_default();
    assert_eq!(image(&inits, "prepare"), "ghcr.io/acme/runner:2");
    assert_eq!(
        image(&inits, "init"),
        DEFAULT_LAUNCHER_IMAGE,
        "runyard's own stay"
    );
    // Injecting again changes nothing.
    assert_eq!(inj.mutate(&new, "ci", &pools), Ok(Mutation::Unchanged));
    // The default image is a run image like any other: the pool's hosts apply.
    let strict = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["registry.local".into()],
            ..Default::default()
        },
    );
    let job_cache_ok = {
        let mut j = job.clone();
        if let Some(spec) = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            spec.containers.retain(|c| c.name == "build");
            spec.init_containers = None;
        }
        j
    };
    let err = inj
        .mutate(&job_cache_ok, "ci", &strict)
        .expect_err("denied");
    assert!(err.to_string().contains("ghcr.io/acme/runner:2"), "{err}");
    // Without a default, a container without image is left for the API
    // server to reject.
    let new = mutated_job(injector().mutate(&job, "ci", &pools));
    let pod = new.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(image(&pod.containers, "build"), "");
}

#[test]
fn privileged_pool_sidecars_need_the_opt_in_too() {
    let mut spec = WorkerPoolSpec::default();
    let mut dind = worker("dind", "docker:dind");
    dind.security_context = Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    spec.pod.additional_sidecar_containers = vec![dind];
    let pod = run_pod(vec![worker("w", "alpine")]);
    let err = injector()
        .mutate(&pod, "ci", &pool("builders", spec.clone()))
        .expect_err("denied");
    assert!(err.to_string().contains("\"dind\" is privileged"), "{err}");
    spec.pod.allow_privileged = true;
    let new = mutated_pod(injector().mutate(&pod, "ci", &pool("builders", spec)));
    assert!(spec_sc_named(&new, "dind").privileged == Some(true));
}

fn spec_sc_named(pod: &Pod, name: &str) -> SecurityContext {
    let s = spec(pod);
    s.init_containers
        .iter()
        .flatten()
        .chain(&s.containers)
        .find(|c| c.name == name)
        .and_then(|c| c.security_context.clone())
        .expect("security context")
}

#[test]
fn pool_sidecars_are_native_sidecars_or_supervised_containers() {
    let mut spec = WorkerPoolSpec::default();
    spec.pod.additional_sidecar_containers = vec![Container {
        command: Some(vec!["redis-server".into()]),
        args: Some(vec!["--save".into(), "".into()]),
        ..worker("redis", "redis:7.4")
    }];
    let pools = pool("builders", spec.clone());
    let pod = run_pod(vec![worker("w", "alpine")]);
    // Native: after the launcher, restartPolicy Always, not a regular container.
    let native = mutated_pod(injector().mutate(&pod, "ci", &pools));
    let s = spec_of(&native);
    let inits: Vec<_> = s
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["init", "launcher", "redis"]);
    let redis = &s.init_containers.as_ref().expect("inits")[2];
    assert_eq!(redis.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        redis.command.as_deref(),
        Some(&["redis-server".to_string()][..])
    );
    assert!(s.containers.iter().all(|c| c.name != "redis"));
    // Container mode: a regular container whose command runs under the shim
    // until the workers are done; init installs the shim.
    let old = mutated_pod(container_injector().mutate(&pod, "ci", &pools));
    let s = spec_of(&old);
    let names: Vec<_> = s.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["w", "redis", "launcher"]);
    let redis = &s.containers[1];
    assert_eq!(
        redis.command.clone().unwrap_or_default(),
        [
            EXEC_SHIM_PATH,
            &format!("{SHIM_UNTIL_ARG}{WORKERS_DONE_FILE}"),
            "--",
            "redis-server"
        ]
    );
    assert_eq!(redis.args.clone().unwrap_or_default(), ["--save", ""]);
    let init = &s.init_containers.as_ref().expect("inits")[0];
    assert_eq!(
        env_value(init, env::EXEC_SHIM).and_then(|e| e.value.as_deref()),
        Some("true")
    );
    // The launcher's readiness is the heartbeat, in both modes.
    for p in [&native, &old] {
        let s = spec_of(p);
        let launcher = s
            .init_containers
            .iter()
            .flatten()
            .chain(&s.containers)
            .find(|c| c.name == LAUNCHER_CONTAINER)
            .expect("launcher");
        let probe = launcher.readiness_probe.as_ref().expect("probe");
        assert_eq!(
            probe
                .exec
                .as_ref()
                .and_then(|e| e.command.clone())
                .unwrap_or_default(),
            ["runyard", "launcher", "probe"]
        );
    }
    // Without a command the shim has nothing to run: denied, with why, but
    // only where it matters.
    spec.pod.additional_sidecar_containers[0].command = None;
    let pools = pool("builders", spec);
    let err = container_injector()
        .mutate(&pod, "ci", &pools)
        .expect_err("no command");
    assert!(
        matches!(err, InjectError::SidecarWithoutCommand { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("set the sidecar's command"),
        "{err}"
    );
    mutated_pod(injector().mutate(&pod, "ci", &pools));
}

fn spec_of(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("spec")
}

// ---------------------------------------------------------------------------
// The complete privilege policy (issue 16.4): every field Pod Security
// `baseline` forbids, and root's user and group.

/// One escape each: (what, a run pod with it, a word of the denial).
fn escapes() -> Vec<(&'static str, Pod, &'static str)> {
    use k8s_openapi::api::core::v1::{
        AppArmorProfile, Capabilities, ContainerPort, HostPathVolumeSource, PodSecurityContext,
        SELinuxOptions, SeccompProfile, Sysctl, WindowsSecurityContextOptions,
    };
    let with_container_sc = |sc: SecurityContext| {
        let mut c = worker("w", "alpine");
        c.security_context = Some(sc);
        run_pod(vec![c])
    };
    let with_pod_sc = |sc: PodSecurityContext| {
        let mut p = run_pod(vec![worker("w", "alpine")]);
        p.spec.as_mut().expect("spec").security_context = Some(sc);
        p
    };
    let with_spec = |f: &dyn Fn(&mut PodSpec)| {
        let mut p = run_pod(vec![worker("w", "alpine")]);
        f(p.spec.as_mut().expect("spec"));
        p
    };
    let se = |t: Option<&str>, user: Option<&str>| SELinuxOptions {
        type_: t.map(Into::into),
        user: user.map(Into::into),
        ..Default::default()
    };
    let profile = |t: &str| SeccompProfile {
        type_: t.into(),
        ..Default::default()
    };
    let apparmor = |t: &str| AppArmorProfile {
        type_: t.into(),
        ..Default::default()
    };
    let mut annotated = run_pod(vec![worker("w", "alpine")]);
    annotated.metadata.annotations = Some(BTreeMap::from([(
        "container.apparmor.security.beta.kubernetes.io/w".into(),
        "unconfined".into(),
    )]));
    vec![
        (
            "hostNetwork",
            with_spec(&|s| s.host_network = Some(true)),
            "hostNetwork",
        ),
        (
            "hostPID",
            with_spec(&|s| s.host_pid = Some(true)),
            "hostPID",
        ),
        (
            "hostIPC",
            with_spec(&|s| s.host_ipc = Some(true)),
            "hostIPC",
        ),
        (
            "hostPath (the runtime socket)",
            with_spec(&|s| {
                s.volumes = Some(vec![Volume {
                    name: "sock".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: "/run/containerd/containerd.sock".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }])
            }),
            "hostPath",
        ),
        (
            "hostPort",
            {
                let mut c = worker("w", "alpine");
                c.ports = Some(vec![ContainerPort {
                    container_port: 80,
                    host_port: Some(80),
                    ..Default::default()
                }]);
                run_pod(vec![c])
            },
            "hostPort 80",
        ),
        (
            "privileged",
            with_container_sc(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            "privileged",
        ),
        (
            "allowPrivilegeEscalation",
            with_container_sc(SecurityContext {
                allow_privilege_escalation: Some(true),
                ..Default::default()
            }),
            "allowPrivilegeEscalation",
        ),
        (
            "capabilities.add",
            with_container_sc(SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(vec!["SYS_ADMIN".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "SYS_ADMIN",
        ),
        (
            "container runAsUser 0",
            with_container_sc(SecurityContext {
                run_as_user: Some(0),
                ..Default::default()
            }),
            "runAsUser: 0",
        ),
        (
            "container runAsGroup 0",
            with_container_sc(SecurityContext {
                run_as_group: Some(0),
                ..Default::default()
            }),
            "runAsGroup: 0",
        ),
        (
            "pod runAsGroup 0",
            with_pod_sc(PodSecurityContext {
                run_as_group: Some(0),
                ..Default::default()
            }),
            "runAsGroup: 0",
        ),
        (
            "fsGroup 0",
            with_pod_sc(PodSecurityContext {
                fs_group: Some(0),
                ..Default::default()
            }),
            "fsGroup: 0",
        ),
        (
            "supplementalGroups 0",
            with_pod_sc(PodSecurityContext {
                supplemental_groups: Some(vec![1000, 0]),
                ..Default::default()
            }),
            "supplementalGroups",
        ),
        (
            "pod runAsNonRoot false",
            with_pod_sc(PodSecurityContext {
                run_as_non_root: Some(false),
                ..Default::default()
            }),
            "runAsNonRoot: false",
        ),
        (
            "SELinux spc_t (container)",
            with_container_sc(SecurityContext {
                se_linux_options: Some(se(Some("spc_t"), None)),
                ..Default::default()
            }),
            "spc_t",
        ),
        (
            "SELinux spc_t (pod)",
            with_pod_sc(PodSecurityContext {
                se_linux_options: Some(se(Some("spc_t"), None)),
                ..Default::default()
            }),
            "spc_t",
        ),
        (
            "SELinux user",
            with_container_sc(SecurityContext {
                se_linux_options: Some(se(None, Some("system_u"))),
                ..Default::default()
            }),
            "SELinux user",
        ),
        (
            "seccomp Unconfined (pod)",
            with_pod_sc(PodSecurityContext {
                seccomp_profile: Some(profile("Unconfined")),
                ..Default::default()
            }),
            "seccompProfile Unconfined",
        ),
        (
            "seccomp Unconfined (container)",
            with_container_sc(SecurityContext {
                seccomp_profile: Some(profile("Unconfined")),
                ..Default::default()
            }),
            "seccompProfile Unconfined",
        ),
        (
            "AppArmor Unconfined (pod)",
            with_pod_sc(PodSecurityContext {
                app_armor_profile: Some(apparmor("Unconfined")),
                ..Default::default()
            }),
            "appArmorProfile Unconfined",
        ),
        (
            "AppArmor Unconfined (container)",
            with_container_sc(SecurityContext {
                app_armor_profile: Some(apparmor("Unconfined")),
                ..Default::default()
            }),
            "appArmorProfile Unconfined",
        ),
        ("AppArmor annotation", annotated, "unconfined"),
        (
            "procMount Unmasked",
            with_container_sc(SecurityContext {
                proc_mount: Some("Unmasked".into()),
                ..Default::default()
            }),
            "procMount: Unmasked",
        ),
        (
            "unsafe sysctl",
            with_pod_sc(PodSecurityContext {
                sysctls: Some(vec![Sysctl {
                    name: "kernel.msgmax".into(),
                    value: "65536".into(),
                }]),
                ..Default::default()
            }),
            "kernel.msgmax",
        ),
        (
            "Windows hostProcess",
            with_container_sc(SecurityContext {
                windows_options: Some(WindowsSecurityContextOptions {
                    host_process: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "hostProcess",
        ),
    ]
}

#[test]
fn every_baseline_escape_is_denied_unless_the_pool_allows_privileged_runs() {
    let mut privileged = WorkerPoolSpec::default();
    privileged.pod.allow_privileged = true;
    let privileged = pool("builders", privileged);
    for (what, pod, needle) in escapes() {
        let err = injector().mutate(&pod, "ci", &builders()).expect_err(what);
        assert!(
            matches!(err, InjectError::PrivilegeNotAllowed { .. })
                && err.to_string().contains(needle),
            "{what}: {err}"
        );
        // The same escape in a Job's pod template.
        let job = Job {
            metadata: ObjectMeta {
                name: Some("j".into()),
                labels: pod.metadata.labels.clone(),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::batch::v1::JobSpec {
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        annotations: pod.metadata.annotations.clone(),
                        ..Default::default()
                    }),
                    spec: pod.spec.clone(),
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(
                injector().mutate(&job, "ci", &builders()),
                Err(InjectError::PrivilegeNotAllowed { .. })
            ),
            "{what} (Job)"
        );
        assert!(
            injector().mutate(&pod, "ci", &privileged).is_ok(),
            "{what}: allowed with allowPrivileged"
        );
    }
    // The pool's own containers are held to the same policy.
    for (what, pod, _) in escapes() {
        let spec = pod.spec.expect("spec");
        let Some(c) = spec
            .containers
            .first()
            .filter(|c| c.security_context.is_some() || c.ports.is_some())
        else {
            continue;
        };
        let mut sidecar = c.clone();
        sidecar.name = "side".into();
        let mut pool_spec = WorkerPoolSpec::default();
        pool_spec.pod.additional_sidecar_containers = vec![sidecar];
        let err = injector()
            .mutate(
                &run_pod(vec![worker("w", "alpine")]),
                "ci",
                &pool("builders", pool_spec),
            )
            .expect_err(what);
        assert!(
            matches!(err, InjectError::PrivilegeNotAllowed { .. }),
            "{what}: {err}"
        );
    }
}

#[test]
fn baseline_allows_what_it_allows() {
    use k8s_openapi::api::core::v1::{PodSecurityContext, SELinuxOptions, SeccompProfile, Sysctl};
    let mut c = worker("w", "alpine");
    c.security_context = Some(SecurityContext {
        se_linux_options: Some(SELinuxOptions {
            type_: Some("container_t".into()),
            level: Some("s0:c1,c2".into()),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some("profiles/audit.json".into()),
        }),
        proc_mount: Some("Default".into()),
        ..Default::default()
    });
    let mut pod = run_pod(vec![c]);
    pod.spec.as_mut().expect("spec").security_context = Some(PodSecurityContext {
        sysctls: Some(vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: "0".into(),
        }]),
        ..Default::default()
    });
    assert!(injector().mutate(&pod, "ci", &builders()).is_ok());
}

#[test]
fn restricted_defaults_fill_what_the_run_left_empty() {
    use k8s_openapi::api::core::v1::Capabilities;
    for caps in [
        Some(Capabilities::default()),
        Some(Capabilities {
            drop: Some(vec![]),
            ..Default::default()
        }),
        None,
    ] {
        let mut c = worker("w", "alpine");
        c.security_context = Some(SecurityContext {
            capabilities: caps.clone(),
            ..Default::default()
        });
        let new = mutated_pod(injector().mutate(&run_pod(vec![c]), "ci", &builders()));
        let sc = spec_sc(&new);
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()]),
            "{caps:?}"
        );
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let pod_sc = spec(&new).security_context.clone().expect("pod sc");
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(
            pod_sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        assert_eq!(
            injector().mutate(&new, "ci", &builders()),
            Ok(Mutation::Unchanged)
        );
    }
    // A run's own explicit drop list is its choice.
    let mut c = worker("w", "alpine");
    c.security_context = Some(SecurityContext {
        capabilities: Some(Capabilities {
            drop: Some(vec!["NET_RAW".into()]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let new = mutated_pod(injector().mutate(&run_pod(vec![c]), "ci", &builders()));
    assert_eq!(
        spec_sc(&new).capabilities.and_then(|c| c.drop),
        Some(vec!["NET_RAW".to_string()])
    );
}
