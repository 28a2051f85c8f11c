//! Inputs that fuzzing found to break an invariant, replayed through the
//! public entry points (see FUZZING.md). Each is minimised by hand to the
//! shape that matters.

use base64::Engine as _;
use runyard::crd::{WorkerPool, WorkerPoolSpec};
use runyard::injection::{ClusterFacts, Injector, SidecarMode, StaticPools};
use runyard::webhook::review::{self, Decision};
use serde_json::{json, Value};

fn pools() -> StaticPools {
    let mut sidecars = WorkerPoolSpec::default();
    sidecars.pod.additional_sidecar_containers = vec![k8s_openapi::api::core::v1::Container {
        name: "side".into(),
        image: Some("registry.local/d:1".into()),
        ..Default::default()
    }];
    let pools = [
        ("builders", WorkerPoolSpec::default()),
        ("sidecars", sidecars),
    ]
    .into_iter()
    .map(|(name, spec)| {
        let mut p = WorkerPool::new(name, spec);
        p.metadata.namespace = Some("ci".into());
        p
    })
    .collect();
    StaticPools::new(pools)
}

fn review_of(kind: &str, object: Value) -> Vec<u8> {
    let (group, resource) = if kind == "Job" {
        ("batch", "jobs")
    } else {
        ("", "pods")
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "namespace": "ci",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
        }
    }))
    .expect("json")
}

/// Applies the response's patch to the request's object, as the API server does.
fn apply(body: &[u8], response: &[u8]) -> Value {
    let request: Value = serde_json::from_slice(body).expect("json");
    let response: Value = serde_json::from_slice(response).expect("json");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["response"]["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("patch");
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies to the object as sent");
    object
}

/// Issue 14: a run object without a `containers` array (missing or `null`), in
/// container sidecar mode or with a pool sidecar, got `add .../containers/0`,
/// which does not apply to the object the API server holds. (Pool sidecars
/// are native sidecars now, so in native mode they land in `initContainers`;
/// the patch must apply all the same.)
#[test]
fn a_run_without_containers_gets_a_patch_that_applies() {
    let pools = pools();
    let container_mode = Injector::with_run_ids(
        ClusterFacts {
            sidecar_mode: SidecarMode::Container,
        },
        || "01jfuzzreg00000000000000000".into(),
    );
    let native = Injector::with_run_ids(ClusterFacts::default(), || {
        "01jfuzzreg00000000000000000".into()
    });
    for (injector, pool) in [(&container_mode, "builders"), (&native, "sidecars")] {
        for containers in [None, Some(Value::Null)] {
            let mut spec = json!({"restartPolicy": "Never"});
            if let Some(c) = &containers {
                spec["containers"] = c.clone();
            }
            let labels = json!({"runyard.dev/pool": pool});
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": labels}, "spec": spec});
            let job = json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "j", "labels": labels},
                "spec": {"template": {"spec": spec}}});
            for (kind, object) in [("Pod", pod), ("Job", job)] {
                let body = review_of(kind, object);
                let handled = review::handle(&body, injector, &pools).expect("readable");
                assert_eq!(
                    handled.decision,
                    Decision::Patched,
                    "{kind} {pool} {containers:?}"
                );
                let patched = apply(&body, &handled.body);
                let spec = if kind == "Job" {
                    &patched["spec"]["template"]["spec"]
                } else {
                    &patched["spec"]
                };
                // Container mode adds the launcher to `containers`; native
                // mode puts the pool's sidecar among the init containers.
                let list = if pool == "builders" {
                    &spec["containers"]
                } else {
                    &spec["initContainers"]
                };
                assert!(
                    list.as_array().is_some_and(|l| !l.is_empty()),
                    "{kind} {pool}: {list}"
                );
            }
        }
    }
}

/// Found by the `engine` target: a pool's `spec.limits` counted runyard's own
/// `init`/`launcher` containers (and volumes, env) on an injected object, so
/// a pod from an injected template of a run at its pool's limit was denied.
#[test]
fn an_injected_run_at_its_pools_limits_passes_again() {
    use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume};
    use runyard::crd::RunLimits;
    use runyard::injection::Mutation;
    let spec = WorkerPoolSpec {
        limits: RunLimits {
            containers: Some(1),
            init_containers: Some(1),
            env_entries: Some(1),
            volumes: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut pool = WorkerPool::new("tight", spec);
    pool.metadata.namespace = Some("ci".into());
    let pools = StaticPools::new(vec![pool]);
    let container = |name: &str| Container {
        name: name.into(),
        image: Some("alpine".into()),
        env: Some(vec![EnvVar {
            name: "X".into(),
            value: Some("1".into()),
            ..Default::default()
        }])
        .filter(|_| name == "w"),
        ..Default::default()
    };
    let pod = Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("p".into()),
            labels: Some([("runyard.dev/pool".to_string(), "tight".to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container("w")],
            init_containers: Some(vec![container("setup")]),
            volumes: Some(vec![Volume {
                name: "data".into(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    for mode in [SidecarMode::Native, SidecarMode::Container] {
        let injector = Injector::with_run_ids(ClusterFacts { sidecar_mode: mode }, || {
            "01jfuzzreg00000000000000000".into()
        });
        let Ok(Mutation::Mutated { object, .. }) = injector.mutate(&pod, "ci", &pools) else {
            panic!("the run is within its limits");
        };
        assert_eq!(
            injector.mutate(&*object, "ci", &pools),
            Ok(Mutation::Unchanged)
        );
    }
    let mut over = pod.clone();
    over.spec
        .as_mut()
        .expect("spec")
        .containers
        .push(container("w2"));
    let err = Injector::new(ClusterFacts::default())
        .mutate(&over, "ci", &pools)
        .expect_err("over the limit");
    assert!(err.to_string().contains("spec.limits.containers"), "{err}");
}

/// Found by the `archive` target: a file entry with an empty name (or `.`)
/// is the target directory itself; replacing it removed the directory.
#[test]
fn a_file_entry_without_a_name_is_refused_and_the_directory_stays() {
    use runyard::launcher::init::{unpack, ExtractLimits, InitError};
    for name in ["", ".", "./"] {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(5);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"hello"[..]).expect("append");
        let archive = builder.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tempdir");
        let into = dir.path().join("into");
        std::fs::create_dir(&into).expect("into");
        let result = unpack(
            || Ok::<_, InitError>(std::io::Cursor::new(archive.as_slice())),
            &into,
            &ExtractLimits::default(),
        );
        let err = result.expect_err(name);
        assert!(
            err.to_string().contains("without a name"),
            "{name:?}: {err}"
        );
        assert!(into.is_dir(), "{name:?}: the directory stays");
    }
}

/// Found by the `review` target after 8.9 million runs (a bug in the target,
/// not the handler): a lone surrogate escape (`"\uDEEB"`) in a field the
/// handler never reads (the crash had it in an UPDATE's `oldObject`) is
/// skipped by serde without validation, so the review is answered like any
/// other; in the object it reads, it is a clear denial. The API server never
/// sends one (Go's encoder writes U+FFFD); what matters is a clear answer.
#[test]
fn a_lone_surrogate_is_answered_clearly() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j", "labels": {"runyard.dev/pool": "builders"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "w", "image": "alpine"}]}}}});
    let native = Injector::with_run_ids(ClusterFacts::default(), || {
        "01jfuzzreg00000000000000000".into()
    });
    let with_surrogate = |mut review: Value, at: &str| {
        let target = review
            .pointer_mut(at)
            .and_then(Value::as_object_mut)
            .expect("object");
        target.insert("SURROGATE".into(), json!("x"));
        let body = review.to_string().replace("\"SURROGATE\"", "\"\\uDEEB\"");
        assert!(
            serde_json::from_str::<Value>(&body).is_err(),
            "not valid for a Value"
        );
        body
    };
    let review: Value = serde_json::from_slice(&review_of("Job", job)).expect("json");
    // In a field the handler skips: answered, patched.
    let mut skipped = review.clone();
    skipped["request"]["options"] = json!({"kind": "CreateOptions"});
    let body = with_surrogate(skipped, "/request/options");
    let handled = review::handle(body.as_bytes(), &native, &pools()).expect("answered");
    assert_eq!(handled.decision, Decision::Patched);
    let response: Value = serde_json::from_slice(&handled.body).expect("response JSON");
    assert_eq!(response["response"]["allowed"], true);
    // In the object: denied, saying where.
    let body = with_surrogate(review, "/request/object/metadata");
    let handled = review::handle(body.as_bytes(), &native, &pools()).expect("answered");
    let response: Value = serde_json::from_slice(&handled.body).expect("response JSON");
    assert_eq!(response["response"]["allowed"], false);
    let message = response["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("not a valid Job") && message.contains("surrogate"),
        "{message}"
    );
}

/// Found by the CI smoke run of the `review` target after issue 17 (which
/// stopped building `metadata.managedFields`): a Pod whose managed fields
/// hold an invalid `time` is now reviewed like any other (the API server
/// owns and validates managed fields; runyard never reads them), and the
/// patch applies and leaves the rest a valid Pod. Before, such a review was
/// denied as "not a valid Pod".
#[test]
fn invalid_managed_fields_are_not_runyards_to_judge() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dry", "labels": {"runyard.dev/pool": "builders"},
            "managedFields": [{"manager": "kubectl-run", "operation": "Update",
                "apiVersion": "v1", "time": "2026-11-21Tjob-nameZ", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}}}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "alpine"}]}});
    let body = review_of("Pod", pod);
    let native = Injector::with_run_ids(ClusterFacts::default(), || {
        "01jfuzzreg00000000000000000".into()
    });
    let handled = review::handle(&body, &native, &pools()).expect("answered");
    assert_eq!(handled.decision, Decision::Patched, "{:?}", handled.message);
    let mut patched = apply(&body, &handled.body);
    assert_eq!(
        patched["metadata"]["managedFields"][0]["time"], "2026-11-21Tjob-nameZ",
        "left as it was"
    );
    patched["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched).expect("a Pod");
    assert!(pod
        .metadata
        .annotations
        .is_some_and(|a| a.contains_key("runyard.dev/injected")));
}
