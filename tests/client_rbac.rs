//! The CI submitter's Role is derived from the code: every method of
//! `ClientApi` (and of its supertraits `PoolReads` and `RunWrites`), as
//! `KubeCluster` implements it, is called against the in-memory API server,
//! and the requests it makes, as RBAC rules, are exactly
//! `runyard::client::RBAC` (which tests/manifests.rs and tests/chart.rs
//! compare with the shipped Roles).

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use runyard::cluster::{ClientApi, KubeCluster, PoolReads, RunWrites};
use runyard::controller::model::RunKey;
use runyard_testing::apiserver::{FakeApiServer, Verb};
use std::collections::{BTreeMap, BTreeSet};

const NS: &str = "ci";

/// The methods this test calls, by name: compared with the traits' source, so
/// a new method cannot go unaccounted for.
const CALLED: &[&str] = &[
    // PoolReads
    "pool",
    "workers",
    "jobs",
    "pods",
    "snapshot",
    // RunWrites
    "patch_job",
    "patch_pod",
    "delete_pod",
    "delete_pod_at",
    "patch_run",
    // ClientApi
    "pools",
    "create_job",
    "get_job",
    "delete_job",
    "get_pod",
    "job_pods",
    "watch_job",
    "follow_logs",
    "read_log",
    "get_configmap",
];

fn trait_methods(name: &str) -> Vec<String> {
    let src = include_str!("../src/cluster/mod.rs");
    let start = src
        .find(&format!("pub trait {name}"))
        .unwrap_or_else(|| panic!("trait {name}"));
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").expect("end of trait")];
    body.split("fn ")
        .skip(1)
        .filter_map(|s| s.split(['(', '<']).next())
        .map(|s| s.trim().to_string())
        .collect()
}

fn verb(v: Verb) -> &'static str {
    match v {
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Get => "get",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
    }
}

fn job(name: &str) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": NS, "labels": { "runyard.dev/pool": "builders" } },
        "spec": { "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "w", "image": "alpine" }] } } }
    }))
    .expect("job")
}

#[tokio::test]
async fn the_ci_submitter_role_is_exactly_what_the_clients_call() {
    let mut declared: Vec<String> = ["PoolReads", "RunWrites", "ClientApi"]
        .iter()
        .flat_map(|t| trait_methods(t))
        .collect();
    declared.sort();
    let mut called: Vec<String> = CALLED.iter().map(|s| s.to_string()).collect();
    called.sort();
    assert_eq!(called, declared, "call every method of the client's traits");

    let server = FakeApiServer::new();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "p", "namespace": NS },
        "spec": { "containers": [{ "name": "w", "image": "alpine" }] }
    }))
    .expect("pod");
    server.create_obj(&pod);
    server.create_obj(&job("watched"));
    let c = KubeCluster::new(server.client(), None);
    let none = serde_json::json!({ "metadata": { "annotations": { "x": "y" } } });

    // Failures (404s) count too: what matters is which requests are made.
    let _ = c.pool(NS, "builders").await;
    let _ = c.workers(NS, "builders").await;
    let _ = c.jobs(NS, "builders").await;
    let _ = c.pods(NS, "builders").await;
    let _ = c.snapshot(NS, "builders").await;
    let _ = c.patch_job(NS, "watched", &none).await;
    let _ = c.patch_pod(NS, "p", &none).await;
    let _ = c.patch_run(NS, &RunKey::job("watched"), &none).await;
    let _ = c.pools(NS).await;
    let _ = c.create_job(NS, &job("created")).await;
    let _ = c.get_job(NS, "created").await;
    let _ = c.delete_job(NS, "created").await;
    let _ = c.get_pod(NS, "p").await;
    let _ = c.job_pods(NS, "watched").await;
    // A watch lists first, then watches: take the listed state, change the
    // Job, and take the change, which only the watch delivers.
    let mut updates = c.watch_job(NS, "watched").await.expect("watch");
    assert!(updates.next().await.is_some(), "the listed Job");
    server
        .modify("jobs", NS, "watched", |j| {
            j["metadata"]["labels"]["seen"] = "yes".into();
        })
        .expect("modify");
    assert!(updates.next().await.is_some(), "the watched change");
    drop(updates);
    server.end_logs(NS, "p", "w");
    if let Ok(mut lines) = c.follow_logs(NS, "p", "w", None).await {
        while lines.next().await.is_some() {}
    }
    let _ = c.read_log(NS, "p", "w").await;
    let _ = c.get_configmap(NS, "runyard-log.job.watched").await;
    let _ = c.delete_pod_at(NS, "p", "1").await;
    let _ = c.delete_pod(NS, "p").await;

    let mut seen: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in server.requests() {
        let resource = match &r.subresource {
            Some(sub) => format!("{}/{sub}", r.resource),
            None => r.resource.clone(),
        };
        seen.entry((r.group.clone(), resource))
            .or_default()
            .insert(verb(r.verb).to_string());
    }
    let want: BTreeMap<(String, String), BTreeSet<String>> = runyard::client::RBAC
        .iter()
        .map(|(g, r, verbs)| {
            (
                (g.to_string(), r.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(seen, want);
}
