//! End-to-end against a real cluster (e.g. kind). Runs only when
//! `RUNYARD_E2E_KUBECONFIG` names a kubeconfig of a disposable cluster; prints
//! that it skipped otherwise. It installs the CRDs, runs the controller
//! in-process against its own namespace, and submits Jobs the way the webhook
//! queues them (busybox workers, so no runyard image is needed).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use runyard::crd::{Worker, WorkerPhase, WorkerPool, WorkerPoolSpec};
use runyard::vocab::{ANNOTATION_INJECTED, LABEL_POOL, LABEL_WORKER};
use std::time::{Duration, Instant};

const POOL: &str = "e2e";

async fn client() -> Option<Client> {
    let Some(path) = std::env::var_os("RUNYARD_E2E_KUBECONFIG") else {
        eprintln!("SKIPPED: e2e tests need RUNYARD_E2E_KUBECONFIG=<kubeconfig of a disposable cluster, e.g. kind>");
        return None;
    };
    let kubeconfig = Kubeconfig::read_from(&path).expect("read RUNYARD_E2E_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Some(Client::try_from(config).expect("client"))
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in runyard::crd::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("runyard-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        wait(Duration::from_secs(60), || async {
            api.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
        .await;
    }
}

async fn wait<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Job as the webhook stores it: suspended (queued), pool-labeled, its
/// template marked injected (the worker is busybox).
fn queued_job(name: &str, seconds: u32) -> Job {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": name, "labels": { LABEL_POOL: POOL } },
        "spec": {
            "suspend": true,
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": { LABEL_POOL: POOL }, "annotations": { ANNOTATION_INJECTED: "true" } },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "worker", "image": "busybox:1.36", "command": ["sh", "-c", format!("echo run {name}; sleep {seconds}")] }]
                }
            }
        }
    }))
    .expect("job")
}

/// Jobs that run: unsuspended and not finished. Since Kubernetes 1.31 the Job
/// controller sets `SuccessCriteriaMet` / `FailureTarget` before `Complete` /
/// `Failed`, and runyard frees the worker at the first of them, so they count
/// as finished here too.
fn active(jobs: &[Job]) -> usize {
    jobs.iter()
        .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(false))
        .filter(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_none_or(|c| {
                    c.iter().all(|c| {
                        c.status != "True"
                            || !matches!(
                                c.type_.as_str(),
                                "Complete" | "Failed" | "SuccessCriteriaMet" | "FailureTarget"
                            )
                    })
                })
        })
        .count()
}

fn complete(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

#[tokio::test]
async fn a_pool_of_two_runs_five_jobs_two_at_a_time_and_scales_safely() {
    let Some(client) = client().await else { return };
    install_crds(&client).await;
    let ns = format!(
        "runyard-e2e-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");

    let pools: Api<WorkerPool> = Api::namespaced(client.clone(), &ns);
    let pool = WorkerPool::new(
        POOL,
        WorkerPoolSpec {
            pool_size: 2,
            ..Default::default()
        },
    );
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("pool");

    let (stop_tx, shutdown) = runyard::shutdown::Shutdown::manual();
    let opts = runyard::controller::runtime::ControllerOptions {
        namespace: Some(ns.clone()),
        resync: Duration::from_secs(5),
        ..runyard::controller::runtime::ControllerOptions::new(
            "e2e",
            &ns,
            "127.0.0.1:0".parse().expect("addr"),
        )
    };
    let controller = tokio::spawn(runyard::controller::runtime::run(
        client.clone(),
        opts,
        shutdown,
    ));

    let workers: Api<Worker> = Api::namespaced(client.clone(), &ns);
    wait(Duration::from_secs(60), || async {
        workers
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len() == 2)
            .unwrap_or(false)
    })
    .await;

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    for i in 0..5 {
        jobs.create(&PostParams::default(), &queued_job(&format!("run-{i}"), 3))
            .await
            .expect("job");
    }
    let start = Instant::now();
    let mut most = 0;
    loop {
        let list = jobs.list(&ListParams::default()).await.expect("jobs").items;
        most = most.max(active(&list));
        assert!(most <= 2, "more than two runs at once");
        if list.iter().filter(|j| complete(j)).count() == 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(most, 2, "the pool ran two at a time");
    // Workers idle again, successful pods gone.
    wait(Duration::from_secs(60), || async {
        workers.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().all(|w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WorkerPhase::Idle && s.runs_completed >= 1)
            })
        })
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait(Duration::from_secs(60), || async {
        pods.list(&ListParams::default().labels(LABEL_POOL))
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await;

    // Scale down while both workers are busy: nothing is killed.
    for i in 0..2 {
        jobs.create(
            &PostParams::default(),
            &queued_job(&format!("long-{i}"), 15),
        )
        .await
        .expect("job");
    }
    wait(Duration::from_secs(60), || async {
        jobs.list(&ListParams::default())
            .await
            .is_ok_and(|l| active(&l.items) == 2)
    })
    .await;
    let scale = serde_json::json!({ "spec": { "replicas": 1 } });
    pools
        .patch_scale(POOL, &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale");
    wait(Duration::from_secs(30), || async {
        workers.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().any(|w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WorkerPhase::Draining)
            })
        })
    })
    .await;
    wait(Duration::from_secs(120), || async {
        jobs.list(&ListParams::default())
            .await
            .is_ok_and(|l| l.items.iter().filter(|j| complete(j)).count() == 7)
    })
    .await;
    for j in jobs.list(&ListParams::default()).await.expect("jobs").items {
        assert!(
            j.labels().contains_key(LABEL_WORKER),
            "{} ran under a worker",
            j.name_any()
        );
    }
    wait(Duration::from_secs(60), || async {
        workers
            .list(&ListParams::default())
            .await
            .is_ok_and(|l| l.items.len() == 1)
    })
    .await;

    // Each finished run kept its log tail and result, owned by its Job
    // (its successful pod is gone).
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &ns);
    let kept = configmaps
        .get(&runyard::vocab::log_configmap_name("Job", "run-0"))
        .await
        .expect("the log tail of run-0 is kept");
    let data = kept.data.clone().unwrap_or_default();
    assert!(
        data.get("log").is_some_and(|l| l.contains("run run-0")),
        "{data:?}"
    );
    let record: runyard::controller::model::ResultRecord =
        serde_json::from_str(data.get("result").map(String::as_str).unwrap_or("{}"))
            .expect("result record");
    assert_eq!(
        (record.outcome.as_str(), record.exit_code),
        ("Succeeded", Some(0))
    );
    assert!(
        record.worker.is_some() && record.duration_seconds.is_some(),
        "{record:?}"
    );
    assert_eq!(
        kept.owner_references().first().map(|o| o.kind.as_str()),
        Some("Job")
    );

    // An image that cannot be pulled fails the run with the pull error in
    // its result, long before activeDeadlineSeconds, and frees the worker.
    let mut unpullable = queued_job("unpullable", 1);
    if let Some(spec) = unpullable
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        spec.containers[0].image = Some("registry.invalid/runyard-e2e/missing:1".into());
    }
    jobs.create(&PostParams::default(), &unpullable)
        .await
        .expect("job");
    wait(Duration::from_secs(240), || async {
        jobs.get("unpullable").await.is_ok_and(|j| {
            j.annotations()
                .get(runyard::vocab::ANNOTATION_RESULT)
                .map(String::as_str)
                == Some("Failed")
        })
    })
    .await;
    let job = jobs.get("unpullable").await.expect("job");
    let detail: runyard::controller::model::ResultRecord = serde_json::from_str(
        job.annotations()
            .get(runyard::vocab::ANNOTATION_RESULT_DETAIL)
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .expect("result detail");
    assert!(
        matches!(
            detail.reason.as_deref(),
            Some("ImagePullBackOff" | "ErrImagePull" | "PendingTimeout")
        ),
        "{detail:?}"
    );
    let message = detail.message.clone().unwrap_or_default();
    assert!(
        message.contains("registry.invalid/runyard-e2e/missing:1"),
        "{message}"
    );
    wait(Duration::from_secs(120), || async {
        jobs.get("unpullable").await.is_ok_and(|j| {
            j.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter().any(|c| {
                    matches!(c.type_.as_str(), "Failed" | "FailureTarget") && c.status == "True"
                })
            })
        })
    })
    .await;
    wait(Duration::from_secs(60), || async {
        workers.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().all(|w| {
                w.status
                    .as_ref()
                    .is_some_and(|s| s.phase == WorkerPhase::Idle)
            })
        })
    })
    .await;

    let _ = stop_tx.send(true);
    controller.await.expect("join").expect("controller");
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
}

fn kubectl(kubeconfig: &std::ffi::OsStr, args: &[&str]) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Installs `webhook-config/crds/` and `webhook-config/` as the README says
/// (the webhook makes its own certificate), then checks that a run pod comes
/// out injected and that a run of a missing pool is denied; at the end
/// uninstalls with `kubectl delete -k webhook-config/` and checks that the
/// pools are still there. Needs the runyard image in the cluster (`RUNYARD_E2E_IMAGE`,
/// e.g. built from the Dockerfile and `kind load docker-image`-ed).
#[tokio::test]
async fn the_installed_webhook_injects_run_pods() {
    let Some(client) = client().await else { return };
    let Some(image) = std::env::var("RUNYARD_E2E_IMAGE").ok() else {
        eprintln!("SKIPPED: installing the webhook needs RUNYARD_E2E_IMAGE=<runyard image available to the cluster>");
        return;
    };
    let kc = std::env::var_os("RUNYARD_E2E_KUBECONFIG").expect("kubeconfig");
    let root = env!("CARGO_MANIFEST_DIR");
    for dir in ["webhook-config/crds", "webhook-config/cluster-wide"] {
        kubectl(
            &kc,
            &["apply", "--server-side", "-k", &format!("{root}/{dir}")],
        );
        if dir.ends_with("crds") {
            kubectl(
                &kc,
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd/workerpools.workers.runyard.dev",
                    "crd/workers.workers.runyard.dev",
                    "--timeout=60s",
                ],
            );
        }
    }
    for (deploy, container) in [
        ("runyard-webhook", "webhook"),
        ("runyard-controller", "controller"),
    ] {
        kubectl(
            &kc,
            &[
                "-n",
                "runyard",
                "set",
                "image",
                &format!("deploy/{deploy}"),
                &format!("{container}={image}"),
            ],
        );
    }
    // Keep the installed webhook and controller to this test's namespace, so
    // the other test's controller (running here, as the kubeconfig's user) is
    // not denied by the trust boundary, and two controllers never share a pool.
    let ns = format!(
        "runyard-e2e-hook-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let only_ns = serde_json::json!({ "matchLabels": { "kubernetes.io/metadata.name": ns } });
    let selectors = serde_json::json!([
        { "op": "replace", "path": "/webhooks/0/namespaceSelector", "value": only_ns },
        { "op": "replace", "path": "/webhooks/1/namespaceSelector", "value": only_ns },
    ]);
    kubectl(
        &kc,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "runyard",
            "--type=json",
            "-p",
            &selectors.to_string(),
        ],
    );
    let args = serde_json::json!([{
        "op": "replace",
        "path": "/spec/template/spec/containers/0/args",
        "value": ["controller", format!("--namespace={ns}"), "--metrics-listen=0.0.0.0:9090", "--log-format=json"],
    }]);
    kubectl(
        &kc,
        &[
            "-n",
            "runyard",
            "patch",
            "deploy/runyard-controller",
            "--type=json",
            "-p",
            &args.to_string(),
        ],
    );
    // No certificate step: the webhook creates its Secret and sets the
    // caBundle itself (`--cert-secret`); rollout status waits for /readyz,
    // which is true only once the caBundle trusts the served certificate.
    kubectl(
        &kc,
        &[
            "-n",
            "runyard",
            "rollout",
            "status",
            "deploy/runyard-webhook",
            "--timeout=180s",
        ],
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    let pools: Api<WorkerPool> = Api::namespaced(client.clone(), &ns);
    pools
        .create(
            &PostParams::default(),
            &WorkerPool::new(
                POOL,
                WorkerPoolSpec {
                    pool_size: 1,
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("pool");
    // The webhook's cache sees the pool within moments.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "bare-run", "labels": { LABEL_POOL: POOL } },
        "spec": { "restartPolicy": "Never", "containers": [{ "name": "worker", "image": "busybox:1.36", "command": ["echo", "hi"] }] }
    }))
    .expect("pod");
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    assert!(
        created.annotations().contains_key(ANNOTATION_INJECTED),
        "injected"
    );
    let spec = created.spec.expect("spec");
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(&inits[..2], ["init", "launcher"]);
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_user),
        Some(1983)
    );

    let mut orphan = pod.clone();
    orphan.metadata.name = Some("orphan".into());
    orphan.metadata.labels = Some([(LABEL_POOL.to_string(), "no-such-pool".to_string())].into());
    let err = pods
        .create(&PostParams::default(), &orphan)
        .await
        .expect_err("denied");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // The trust boundary on a real API server: a run of a pool with no
    // workers stays queued, and a user cannot start it by unsuspending it.
    pools
        .create(
            &PostParams::default(),
            &WorkerPool::new(
                "frozen",
                WorkerPoolSpec {
                    pool_size: 0,
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("pool");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let mut frozen = queued_job("frozen-run", 1);
    frozen.metadata.labels = Some([(LABEL_POOL.to_string(), "frozen".to_string())].into());
    if let Some(t) = frozen
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
    {
        t.labels = Some([(LABEL_POOL.to_string(), "frozen".to_string())].into());
    }
    let created = jobs
        .create(&PostParams::default(), &frozen)
        .await
        .expect("queued");
    assert_eq!(created.spec.as_ref().and_then(|s| s.suspend), Some(true));
    let err = jobs
        .patch(
            "frozen-run",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "spec": { "suspend": false } })),
        )
        .await
        .expect_err("a user cannot start a queued run");
    assert!(err.to_string().contains("spec.suspend"), "{err}");

    // A pool sidecar that never exits by itself (a cache, a database) does
    // not keep the run alive: on 1.29+ it is a native sidecar, stopped by the
    // kubelet once the worker is done; the Job completes and the worker is
    // freed.
    let mut sidecar_spec = WorkerPoolSpec {
        pool_size: 1,
        ..Default::default()
    };
    sidecar_spec.pod.additional_sidecar_containers =
        vec![serde_json::from_value(serde_json::json!({
            "name": "forever", "image": "busybox:1.36", "command": ["sleep", "3600"]
        }))
        .expect("sidecar")];
    pools
        .create(
            &PostParams::default(),
            &WorkerPool::new("with-sidecar", sidecar_spec),
        )
        .await
        .expect("pool");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut with_sidecar = queued_job("with-sidecar-run", 1);
    with_sidecar.metadata.labels =
        Some([(LABEL_POOL.to_string(), "with-sidecar".to_string())].into());
    if let Some(t) = with_sidecar
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
    {
        t.labels = Some([(LABEL_POOL.to_string(), "with-sidecar".to_string())].into());
    }
    jobs.create(&PostParams::default(), &with_sidecar)
        .await
        .expect("queued");
    wait(Duration::from_secs(240), || async {
        jobs.get("with-sidecar-run")
            .await
            .is_ok_and(|j| complete(&j))
    })
    .await;
    let done = jobs.get("with-sidecar-run").await.expect("job");
    assert_eq!(
        done.annotations()
            .get(runyard::vocab::ANNOTATION_RESULT)
            .map(String::as_str),
        Some("Succeeded"),
        "{:?}",
        done.metadata.annotations
    );

    // `runyard submit` through the installed webhook and controller: the run
    // is queued, claimed, injected (init and launcher from the image), and
    // submit exits with the worker's exit code after printing its log.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .env("KUBECONFIG", &kc)
        .args([
            "submit",
            "-n",
            &ns,
            "--pool",
            POOL,
            "--image",
            "busybox:1.36",
            "-o",
            "json",
            "--",
            "sh",
            "-c",
            "echo hello from the worker; exit 3",
        ])
        .output()
        .expect("runyard submit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from the worker"), "{stdout}");
    assert!(stdout.contains("\"exitCode\":3"), "{stdout}");

    // The README's uninstall (of the cluster-wide install made above):
    // runyard goes, the CRDs and every pool stay.
    kubectl(
        &kc,
        &[
            "delete",
            "-k",
            &format!("{root}/webhook-config/cluster-wide"),
            "--timeout=180s",
        ],
    );
    let configs: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    assert!(configs.get_opt("runyard").await.expect("read").is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(crds
        .get_opt("workerpools.workers.runyard.dev")
        .await
        .expect("read")
        .is_some());
    assert!(
        pools.get_opt(POOL).await.expect("read").is_some(),
        "pools are kept"
    );

    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
}
