//! The fake API server driven by a real `kube::Client`: typed CRUD, patches,
//! server-side apply, status, finalizers, paging, selectors, watchers and
//! reflectors, logs, faults, events and Leases.

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams,
    PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use runyard_testing::apiserver::{FakeApiServer, FaultSpec, ResourceType, Verb};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

/// Polls `f` until true (5 s at most).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}},
        "status": {"active": 7},
    }))
    .unwrap()
}

fn pod(name: &str, containers: &[&str]) -> Pod {
    let cs: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "i"}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
        "spec": {"containers": cs},
    }))
    .unwrap()
}

// ---------------------------------------------------------------- CRUD ----

#[tokio::test]
async fn configmap_crud_generate_name_and_conflicts() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    let pp = PostParams::default();

    let mut gen = cm("", &[]);
    gen.metadata.name = None;
    gen.metadata.generate_name = Some("cfg-".into());
    let made = api.create(&pp, &gen).await.unwrap();
    let name = made.name_any();
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    assert_eq!(made.namespace().as_deref(), Some("ns"));
    assert!(made.uid().is_some());
    assert!(made.metadata.creation_timestamp.is_some());
    let rv1 = made.resource_version().unwrap();

    let a = api.create(&pp, &cm("a", &[])).await.unwrap();
    assert_eq!(code(api.create(&pp, &cm("a", &[])).await.unwrap_err()), 409);
    assert!(a.resource_version().unwrap().parse::<u64>().unwrap() > rv1.parse().unwrap());

    // replace with the current rv works, with the old one conflicts
    let mut changed = a.clone();
    changed.data = Some(BTreeMap::from([("k".into(), "w".into())]));
    let replaced = api.replace("a", &pp, &changed).await.unwrap();
    assert_eq!(replaced.data.as_ref().unwrap()["k"], "w");
    assert_eq!(
        code(api.replace("a", &pp, &changed).await.unwrap_err()),
        409
    );
    // a resourceVersion on create is refused, as by the real server
    assert_eq!(code(api.create(&pp, &replaced).await.unwrap_err()), 500);

    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "w");
    assert_eq!(code(api.get("missing").await.unwrap_err()), 404);
    assert!(api.get_opt("missing").await.unwrap().is_none());
    assert_eq!(
        code(
            api.replace("missing", &pp, &cm("missing", &[]))
                .await
                .unwrap_err()
        ),
        404
    );

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
    assert_eq!(
        code(api.delete("a", &DeleteParams::default()).await.unwrap_err()),
        404
    );

    // invalid names and namespace mismatches are rejected
    assert_eq!(
        code(api.create(&pp, &cm("Bad_Name", &[])).await.unwrap_err()),
        422
    );
    let mut other_ns = cm("b", &[]);
    other_ns.metadata.namespace = Some("elsewhere".into());
    assert_eq!(code(api.create(&pp, &other_ns).await.unwrap_err()), 400);
}

#[tokio::test]
async fn merge_patch_precondition_json_patch_and_dry_run() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    let made = api
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    let rv = made.resource_version().unwrap();

    let pp = PatchParams::default();
    let patched = api
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "data": {"n": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["n"], "1");
    assert_eq!(patched.data.as_ref().unwrap()["k"], "v");
    // the same precondition is now stale
    let stale = Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "data": {"n": "2"}}));
    assert_eq!(code(api.patch("a", &pp, &stale).await.unwrap_err()), 409);
    // null removes (RFC 7386)
    let removed = api
        .patch("a", &pp, &Patch::Merge(json!({"data": {"k": null}})))
        .await
        .unwrap();
    assert!(!removed.data.as_ref().unwrap().contains_key("k"));

    // JSON patch (kube's `Patch::Json` needs its jsonpatch feature: send it raw)
    let json_patch = |ops: serde_json::Value| {
        let req = http::Request::patch("/api/v1/namespaces/ns/configmaps/a")
            .header("Content-Type", "application/json-patch+json")
            .body(serde_json::to_vec(&ops).unwrap())
            .unwrap();
        let client = server.client();
        async move { client.request::<ConfigMap>(req).await }
    };
    let jp = json_patch(json!([
        {"op": "add", "path": "/data/j", "value": "p"},
        {"op": "remove", "path": "/metadata/labels/app"},
    ]))
    .await
    .unwrap();
    assert_eq!(jp.data.as_ref().unwrap()["j"], "p");
    assert!(jp.labels().is_empty());
    let failing = json_patch(json!([{"op": "test", "path": "/data/j", "value": "nope"}])).await;
    assert_eq!(code(failing.unwrap_err()), 422);

    // a no-op patch writes nothing: same resourceVersion
    let again = api
        .patch("a", &pp, &Patch::Merge(json!({"data": {"j": "p"}})))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), jp.resource_version());

    // strategic merge on a built-in type is accepted (as a merge patch)
    let smp = api
        .patch("a", &pp, &Patch::Strategic(json!({"data": {"s": "1"}})))
        .await
        .unwrap();
    assert_eq!(smp.data.unwrap()["s"], "1");

    // dry run stores nothing
    let dry = api
        .patch(
            "a",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"data": {"dry": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["dry"], "1");
    assert!(!api
        .get("a")
        .await
        .unwrap()
        .data
        .unwrap()
        .contains_key("dry"));
    let dry_created = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry", &[]),
        )
        .await
        .unwrap();
    assert_eq!(dry_created.name_any(), "dry");
    assert!(api.get_opt("dry").await.unwrap().is_none());
}

#[tokio::test]
async fn server_side_apply_creates_records_managers_and_conflicts() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}});

    // fieldManager is required
    let no_manager = api
        .patch("a", &PatchParams::default(), &Patch::Apply(&applied))
        .await;
    assert_eq!(code(no_manager.unwrap_err()), 422);

    let created = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap()["x"], "1");
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(mf[0].api_version.as_deref(), Some("v1"));
    assert!(mf[0].time.is_some());

    // re-applying the same is a no-op
    let same = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(same.resource_version(), created.resource_version());

    // bob changing alice's field conflicts, unless forced
    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2", "y": "b"}});
    let err = api
        .patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob))
        .await
        .unwrap_err();
    assert_eq!(code(err), 409);
    let forced = api
        .patch("a", &PatchParams::apply("bob").force(), &Patch::Apply(&bob))
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["x"], "2");
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["bob"], "alice lost her only field");
    // bob dropping y removes it
    let bob2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2"}});
    let after = api
        .patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob2))
        .await
        .unwrap();
    assert_eq!(
        after.data.unwrap(),
        BTreeMap::from([("x".into(), "2".into())])
    );

    let r = server
        .requests()
        .into_iter()
        .rfind(|r| r.verb == Verb::Patch)
        .unwrap();
    assert_eq!(r.field_manager.as_deref(), Some("bob"));
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_follows_spec() {
    let server = FakeApiServer::new();
    let api: Api<Job> = Api::namespaced(server.client(), "ns");
    let made = api.create(&PostParams::default(), &job("j")).await.unwrap();
    assert!(made.status.is_none(), "status is dropped on create");
    assert_eq!(made.metadata.generation, Some(1));

    let st = api
        .patch_status(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1}, "spec": {"parallelism": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().active, Some(1));
    assert_eq!(
        st.spec.as_ref().unwrap().parallelism,
        None,
        "status writes ignore spec"
    );
    assert_eq!(st.metadata.generation, Some(1));

    let mut j = st.clone();
    j.status.as_mut().unwrap().active = Some(5);
    j.spec.as_mut().unwrap().parallelism = Some(2);
    let replaced = api.replace("j", &PostParams::default(), &j).await.unwrap();
    assert_eq!(
        replaced.status.as_ref().unwrap().active,
        Some(1),
        "main writes ignore status"
    );
    assert_eq!(replaced.spec.as_ref().unwrap().parallelism, Some(2));
    assert_eq!(replaced.metadata.generation, Some(2));

    let labelled = api
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes keep generation"
    );

    let mut s = labelled.clone();
    s.status.as_mut().unwrap().active = Some(3);
    let st2 = api
        .replace_status("j", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(st2.status.unwrap().active, Some(3));
    assert_eq!(
        api.get_status("j").await.unwrap().status.unwrap().active,
        Some(3)
    );

    // configmaps have no status subresource
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    cms.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    assert_eq!(code(cms.get_status("c").await.unwrap_err()), 404);
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    let mut c = cm("f", &[]);
    c.metadata.finalizers = Some(vec!["runyard.dev/cleanup".into()]);
    let made = api.create(&PostParams::default(), &c).await.unwrap();

    // preconditions
    let wrong_uid = DeleteParams::default().preconditions(Preconditions {
        uid: Some("nope".into()),
        resource_version: None,
    });
    assert_eq!(code(api.delete("f", &wrong_uid).await.unwrap_err()), 409);
    let wrong_rv = DeleteParams::default().preconditions(Preconditions {
        uid: None,
        resource_version: Some("1".into()),
    });
    assert_eq!(code(api.delete("f", &wrong_rv).await.unwrap_err()), 409);

    let deleting = api
        .delete("f", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_ne!(deleting.resource_version(), made.resource_version());
    let still = api.get("f").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn paging_selectors_and_metadata_lists() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), &[("tier", tier), ("app", "x")]),
        )
        .await
        .unwrap();
    }
    Api::<ConfigMap>::namespaced(server.client(), "other")
        .create(&PostParams::default(), &cm("c9", &[("tier", "even")]))
        .await
        .unwrap();

    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.name_any()));
        if pages == 1 {
            first_rv = page.metadata.resource_version.clone();
            assert_eq!(page.metadata.remaining_item_count, Some(4));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = ListParams::default().limit(3).continue_token(&token),
            None => {
                assert_eq!(
                    page.metadata.resource_version, first_rv,
                    "pages share the first rv"
                );
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    let sel = |s: &str| {
        let api = api.clone();
        let s = s.to_string();
        async move {
            api.list(&ListParams::default().labels(&s))
                .await
                .map(|l| l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>())
        }
    };
    assert_eq!(sel("tier=even").await.unwrap(), ["c0", "c2", "c4", "c6"]);
    assert_eq!(sel("tier!=even,app").await.unwrap(), ["c1", "c3", "c5"]);
    assert_eq!(sel("tier in (odd),app==x").await.unwrap().len(), 3);
    assert_eq!(sel("!app").await.unwrap().len(), 0);
    assert_eq!(code(sel("tier in odd").await.unwrap_err()), 400);

    let all: Api<ConfigMap> = Api::all(server.client());
    let by_field = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let by_name = all
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(by_name.items[0].namespace().as_deref(), Some("ns"));
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        8
    );

    let meta = all
        .list_metadata(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(meta.types.kind, "PartialObjectMetadataList");
    assert_eq!(meta.items.len(), 5);
    assert_eq!(
        meta.items[0].types.as_ref().unwrap().kind,
        "PartialObjectMetadata"
    );
    let one: PartialObjectMeta<ConfigMap> = api.get_metadata("c1").await.unwrap();
    assert_eq!(one.labels()["tier"], "odd");

    // a continue token from before a compaction has expired
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    api.create(&PostParams::default(), &cm("late", &[]))
        .await
        .unwrap();
    server.compact();
    let token = page.metadata.continue_.unwrap();
    assert_eq!(
        code(
            api.list(&ListParams::default().limit(2).continue_token(&token))
                .await
                .unwrap_err()
        ),
        410
    );
}

#[tokio::test]
async fn custom_resources_cluster_scope_and_unknown_resources() {
    let server = FakeApiServer::new();
    let gvk = GroupVersionKind::gvk("workers.runyard.dev", "v1alpha1", "WorkerPool");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "workerpools");
    let pools: Api<DynamicObject> = Api::namespaced_with(server.client(), "ns", &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "workers.runyard.dev/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": "builders"}, "spec": {"size": 2}, "status": {"ready": 5},
    }))
    .unwrap();
    let made = pools.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(made.metadata.generation, Some(1));
    assert!(made.data.get("status").is_none());
    let smp = pools
        .patch(
            "builders",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 3}})),
        )
        .await;
    assert_eq!(
        code(smp.unwrap_err()),
        415,
        "no strategic merge for custom resources"
    );
    let grown = pools
        .patch(
            "builders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(grown.metadata.generation, Some(2));
    assert_eq!(
        server.get("workerpools", "ns", "builders").unwrap()["spec"]["size"],
        3
    );

    // a registered CRD
    server.register(ResourceType::new("example.com", "v1", "widgets", "Widget").cluster_scoped());
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::all_with(server.client(), &ar);
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    )
    .unwrap();
    let made = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(made.metadata.namespace.is_none());
    assert_eq!(server.list("widgets.example.com", None).len(), 1);

    // not served: 404 with a Status
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(server.client(), "ns");
    assert_eq!(
        code(deployments.list(&ListParams::default()).await.unwrap_err()),
        404
    );
    assert_eq!(
        server
            .client()
            .apiserver_version()
            .await
            .unwrap()
            .git_version,
        "v1.36.2"
    );
}

#[tokio::test]
async fn admission_hooks_see_user_and_can_mutate_or_deny() {
    let server = FakeApiServer::new();
    server.on_create("configmaps", |obj, info| {
        if info.name.as_deref() == Some("denied") {
            return Err((
                403,
                "admission webhook \"test\" denied the request: no".into(),
            ));
        }
        obj["metadata"]["labels"] =
            json!({"created-by": info.user, "dry": info.dry_run.to_string()});
        Ok(())
    });
    server.on_update("configmaps", |obj, info| {
        let old = info.old_object.as_ref().expect("old object on update");
        obj["data"]["previous"] = old["data"]["k"].clone();
        Ok(())
    });
    let api: Api<ConfigMap> = Api::namespaced(server.client_as("alice"), "ns");
    let made = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    assert_eq!(made.labels()["created-by"], "alice");
    assert_eq!(made.labels()["dry"], "false");
    let err = api
        .create(&PostParams::default(), &cm("denied", &[]))
        .await
        .unwrap_err();
    assert_eq!(code(err), 403);
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "new"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["previous"], "v");
    assert!(server.requests().iter().all(|r| r.user == "alice"));

    // pods get the Pending phase on create; direct inserts keep what they are given
    let pods: Api<Pod> = Api::namespaced(server.client(), "ns");
    let p = pods
        .create(&PostParams::default(), &pod("p", &["main"]))
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
}

#[tokio::test]
async fn direct_access_and_garbage_collection() {
    let server = FakeApiServer::new();
    let owner = server.create_obj(&job("owner"));
    let owner = Job {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            ..owner.metadata
        },
        ..owner
    };
    assert_eq!(
        owner.status.as_ref().unwrap().active,
        Some(7),
        "inserts keep status"
    );
    let mut child = pod("child", &["c"]);
    child.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    child.metadata.namespace = Some("default".into());
    server.create_obj(&child);
    let mut grandchild = cm("gc", &[]);
    grandchild.metadata.namespace = Some("default".into());
    grandchild.metadata.owner_references = Some(vec![server
        .get_obj::<Pod>("default", "child")
        .unwrap()
        .controller_owner_ref(&())
        .unwrap()]);
    server.create_obj(&grandchild);

    assert_eq!(server.collect_garbage(), 0);
    let updated = server.update_obj::<Job>("default", "owner", |j| {
        j.spec.as_mut().unwrap().parallelism = Some(3)
    });
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(server.remove("jobs", "default", "owner").is_some());
    assert_eq!(server.collect_garbage(), 2);
    assert!(server.objects::<Pod>(None).is_empty());
    assert!(server.objects::<ConfigMap>(Some("default")).is_empty());
    assert!(server.modify("pods", "default", "child", |_| {}).is_err());
}

// ------------------------------------------------------------- watches ----

#[tokio::test]
async fn watcher_default_config_syncs_and_follows_with_exact_request_counts() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    api.create(&PostParams::default(), &cm("pre", &[]))
        .await
        .unwrap();
    server.reset_requests();

    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(item) = s.next().await {
            item.expect("watch error");
        }
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);
    assert_eq!(server.count(Verb::List, "configmaps"), 1);
    eventually("watch open", || {
        server.count(Verb::Watch, "configmaps") == 1
    })
    .await;

    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("n{i}"), &[]))
            .await
            .unwrap();
    }
    api.patch(
        "n0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    api.delete("pre", &DeleteParams::default()).await.unwrap();
    eventually("store caught up", || {
        let s = reader.state();
        s.len() == 5 && s.iter().any(|c| c.data.as_ref().unwrap()["k"] == "changed")
    })
    .await;
    assert_eq!(
        server.count(Verb::List, "configmaps"),
        1,
        "events cause no further lists"
    );
    assert_eq!(server.count(Verb::Watch, "configmaps"), 1);
    task.abort();
}

#[tokio::test]
async fn watcher_streaming_lists_use_one_watch() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    server.reset_requests();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut init = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::Init => {}
            watcher::Event::InitApply(c) => init.push(c.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(init, ["c0", "c1", "c2"]);
    api.create(&PostParams::default(), &cm("later", &[]))
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Apply(c) => assert_eq!(c.name_any(), "later"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.count(Verb::List, "configmaps"), 0);
    assert_eq!(server.count(Verb::Watch, "configmaps"), 1);
}

#[tokio::test]
#[allow(deprecated)]
async fn metadata_watchers_get_partial_objects() {
    let server = FakeApiServer::new();
    let client = server.client();
    let api: Api<Pod> = Api::namespaced(client.clone(), "ns");
    api.create(&PostParams::default(), &pod("p0", &["c"]))
        .await
        .unwrap();

    let meta_api: Api<PartialObjectMeta<Pod>> = Api::namespaced(client.clone(), "ns");
    let mut typed = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut old_style =
        kube::runtime::metadata_watcher(api.clone(), watcher::Config::default().streaming_lists())
            .applied_objects()
            .boxed();
    assert_eq!(typed.try_next().await.unwrap().unwrap().name_any(), "p0");
    assert_eq!(
        old_style.try_next().await.unwrap().unwrap().name_any(),
        "p0"
    );
    api.create(&PostParams::default(), &pod("p1", &["c"]))
        .await
        .unwrap();
    let p1 = typed.try_next().await.unwrap().unwrap();
    assert_eq!(p1.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    assert_eq!(
        old_style.try_next().await.unwrap().unwrap().name_any(),
        "p1"
    );
    let metadata_requests = server
        .requests()
        .into_iter()
        .filter(|r| r.metadata_only)
        .count();
    assert_eq!(
        metadata_requests, 3,
        "list + watch, and one streaming watch"
    );
}

#[tokio::test]
async fn reflector_recovers_from_410_after_compaction() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()));
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let errs = errors.clone();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(item) = s.next().await {
            if let Err(e) = item {
                errs.lock().unwrap().push(e.to_string());
            }
        }
    });
    reader.wait_until_ready().await.unwrap();
    eventually("watch open", || server.open_watches() == 1).await;

    // the cache goes stale on purpose, then the history is compacted and the
    // watch ends: resuming from the old rv gets 410, and the watcher relists
    server.pause_watches();
    api.create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(reader.state().len(), 1, "paused: the cache is stale");
    server.compact();
    server.close_watches();
    eventually("relisted", || reader.state().len() == 2).await;
    assert_eq!(server.count(Verb::List, "configmaps"), 2);
    assert!(
        errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("too old resource version")),
        "{errors:?}"
    );
    server.resume_watches();
    api.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();
    eventually("watching again", || reader.state().len() == 3).await;
    task.abort();
}

#[tokio::test]
async fn selector_transitions_are_added_and_deleted() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    let mut events = watcher(api.clone(), watcher::Config::default().labels("run=yes")).boxed();
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(watcher::Event::Init)
    ));
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(watcher::Event::InitDone)
    ));
    api.create(&PostParams::default(), &cm("x", &[("run", "no")]))
        .await
        .unwrap();
    let pp = PatchParams::default();
    api.patch(
        "x",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"run": "yes"}}})),
    )
    .await
    .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Apply(c) => assert_eq!(c.labels()["run"], "yes"),
        other => panic!("{other:?}"),
    }
    let off = api
        .patch(
            "x",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"run": "no"}}})),
        )
        .await
        .unwrap();
    match events.try_next().await.unwrap().unwrap() {
        watcher::Event::Delete(c) => {
            assert_eq!(c.labels()["run"], "yes", "the last matching state");
            assert_eq!(c.resource_version(), off.resource_version());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn per_client_pause_timeouts_and_dropped_streams() {
    let server = FakeApiServer::new();
    let stale = server.client_handle("stale");
    let fresh = server.client_handle("fresh");
    let wp = WatchParams::default();
    let stale_api: Api<ConfigMap> = Api::namespaced(stale.client(), "ns");
    let fresh_api: Api<ConfigMap> = Api::namespaced(fresh.client(), "ns");
    let rv = server.resource_version().to_string();
    let mut s1 = stale_api.watch(&wp, &rv).await.unwrap().boxed();
    let mut s2 = fresh_api.watch(&wp, &rv).await.unwrap().boxed();
    stale.pause_watches();
    fresh_api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    assert!(matches!(
        s2.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    let held = tokio::time::timeout(Duration::from_millis(100), s1.try_next()).await;
    assert!(held.is_err(), "the paused client's watch holds its events");
    stale.resume_watches();
    assert!(matches!(
        s1.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));

    // streams end promptly once dropped
    assert_eq!(server.open_watches(), 2);
    drop(s1);
    drop(s2);
    eventually("streams closed", || server.open_watches() == 0).await;

    // timeoutSeconds ends the stream
    let mut short = fresh_api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        short.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    let ended = tokio::time::timeout(Duration::from_secs(3), short.try_next()).await;
    assert!(matches!(ended, Ok(Ok(None))));

    // too old: one ERROR event, then the end
    server.compact();
    let mut old = fresh_api.watch(&wp, "1").await.unwrap().boxed();
    match old.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("{other:?}"),
    }
    assert!(old.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn a_controller_reconciles_and_settles() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;

    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let ctx = Arc::new(api.clone());
    let task = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(
                |obj: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>| async move {
                    let patch = json!({"metadata": {"annotations": {"seen": "yes"}}});
                    api.patch(
                        &obj.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                    Ok::<_, kube::Error>(Action::await_change())
                },
                |_, _, _| Action::requeue(Duration::from_secs(1)),
                ctx,
            )
            .for_each(|_| async {}),
    );
    eventually("all reconciled", || {
        server
            .objects::<ConfigMap>(Some("ns"))
            .iter()
            .all(|c| c.annotations().contains_key("seen"))
    })
    .await;
    // each object's own patch triggers one more reconcile, whose patch is a no-op
    eventually("settled", || server.count(Verb::Patch, "configmaps") == 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.count(Verb::Patch, "configmaps"), 6);
    assert_eq!(server.count(Verb::List, "configmaps"), 1);
    task.abort();
}

// ---------------------------------------------------------------- logs ----

#[tokio::test]
async fn followed_logs_see_appended_lines_until_termination() {
    let server = FakeApiServer::new();
    let pods: Api<Pod> = Api::namespaced(server.client(), "ns");
    server.create_obj(&pod("p", &["main", "side"]));
    server.append_log("ns", "p", "main", "first");
    let lp = LogParams {
        container: Some("main".into()),
        follow: true,
        timestamps: true,
        ..LogParams::default()
    };
    let mut lines = pods.log_stream("p", &lp).await.unwrap().lines();
    let first = lines.try_next().await.unwrap().unwrap();
    let (ts, text) = first.split_once(' ').unwrap();
    assert_eq!(text, "first");
    assert_eq!(ts.len(), "2026-01-01T00:00:00.000000000Z".len(), "{ts}");
    ts.parse::<k8s_openapi::jiff::Timestamp>().unwrap();

    let appender = server.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        appender.append_log("ns", "p", "main", "second");
        appender.append_log("ns", "p", "side", "not mine");
        appender.modify("pods", "ns", "p", |p| {
            p["status"] = json!({"containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 0}}}]});
        })
        .unwrap();
    });
    assert!(lines
        .try_next()
        .await
        .unwrap()
        .unwrap()
        .ends_with(" second"));
    assert!(
        lines.try_next().await.unwrap().is_none(),
        "ends when the container terminates"
    );

    // a container is required for a pod of two; unknown ones are refused
    assert_eq!(
        code(pods.logs("p", &LogParams::default()).await.unwrap_err()),
        400
    );
    let bad = LogParams {
        container: Some("nope".into()),
        ..LogParams::default()
    };
    assert_eq!(code(pods.logs("p", &bad).await.unwrap_err()), 400);
    assert_eq!(
        code(
            pods.logs("missing", &LogParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(server.count(Verb::Get, "pods/log"), 4);
}

#[tokio::test]
async fn log_options_and_end_logs_and_dropped_streams() {
    let server = FakeApiServer::new();
    let pods: Api<Pod> = Api::namespaced(server.client(), "ns");
    server.create_obj(&pod("p", &["main"]));
    for l in ["one", "two", "three"] {
        server.append_log("ns", "p", "main", l);
    }
    assert_eq!(
        pods.logs("p", &LogParams::default()).await.unwrap(),
        "one\ntwo\nthree\n"
    );
    let limit = LogParams {
        limit_bytes: Some(6),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("p", &limit).await.unwrap(), "one\ntw");
    let tail = LogParams {
        tail_lines: Some(1),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("p", &tail).await.unwrap(), "three\n");
    let since = LogParams {
        since_seconds: Some(60),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("p", &since).await.unwrap().lines().count(), 3);
    // an old line is outside sinceSeconds
    server.modify("pods", "ns", "p", |_| {}).unwrap();
    let future = LogParams {
        since_time: Some(
            k8s_openapi::jiff::Timestamp::now()
                + k8s_openapi::jiff::SignedDuration::from_secs(3600),
        ),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("p", &future).await.unwrap(), "");

    // end_logs ends followers after the last line
    let follow = LogParams {
        follow: true,
        ..LogParams::default()
    };
    let mut lines = pods.log_stream("p", &follow).await.unwrap().lines();
    assert_eq!(lines.try_next().await.unwrap().unwrap(), "one");
    server.end_logs("ns", "p", "main");
    assert_eq!(
        lines.try_collect::<Vec<_>>().await.unwrap(),
        ["two", "three"]
    );

    // the next stream drops after two lines: an error, as a broken connection
    server.drop_log_streams(1, 2);
    let mut lines = pods.log_stream("p", &follow).await.unwrap().lines();
    assert_eq!(lines.try_next().await.unwrap().unwrap(), "one");
    assert_eq!(lines.try_next().await.unwrap().unwrap(), "two");
    assert!(lines.try_next().await.is_err());
    // the one after is whole
    let all: Vec<String> = pods
        .log_stream("p", &follow)
        .await
        .unwrap()
        .lines()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
}

// -------------------------------------------------------------- faults ----

#[tokio::test]
async fn faults_hang_delay_status_and_applied_writes() {
    let server = FakeApiServer::new();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    api.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();

    let hang = server.fail(FaultSpec::hang(Verb::Get).resource("configmaps").name("a"));
    let r = tokio::time::timeout(Duration::from_millis(100), api.get("a")).await;
    assert!(r.is_err(), "the GET never answers");
    server.clear_fault(hang);
    api.get("a").await.unwrap();

    // an applied 504: the caller sees a timeout, the write landed
    server.fail(
        FaultSpec::status(Verb::Patch, 504)
            .resource("configmaps")
            .applied()
            .times(1),
    );
    let err = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"landed": "yes"}})),
        )
        .await;
    assert_eq!(code(err.unwrap_err()), 504);
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["landed"], "yes");
    // times(1): the next patch is fine
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "1"}})),
    )
    .await
    .unwrap();

    // not applied: nothing lands
    server.fail(FaultSpec::status(Verb::Create, 500).times(2));
    assert_eq!(
        code(
            api.create(&PostParams::default(), &cm("b", &[]))
                .await
                .unwrap_err()
        ),
        500
    );
    assert_eq!(
        code(
            api.create(&PostParams::default(), &cm("b", &[]))
                .await
                .unwrap_err()
        ),
        500
    );
    assert!(server.get("configmaps", "ns", "b").is_none());
    api.create(&PostParams::default(), &cm("b", &[]))
        .await
        .unwrap();

    // 429 and 409 carry real Status bodies
    server.fail(FaultSpec::status(Verb::List, 429).times(1));
    match api.list(&ListParams::default()).await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests")),
        other => panic!("{other}"),
    }

    // a hung applied write still lands
    server.fail(FaultSpec::hang(Verb::Delete).applied().times(1));
    assert!(tokio::time::timeout(
        Duration::from_millis(100),
        api.delete("b", &DeleteParams::default())
    )
    .await
    .is_err());
    assert!(server.get("configmaps", "ns", "b").is_none());

    server.fail(FaultSpec::delay(Verb::Get, Duration::from_millis(150)).times(1));
    let started = std::time::Instant::now();
    api.get("a").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));

    // a failing watch start surfaces as a watcher error, then it recovers
    server.fail(
        FaultSpec::status(Verb::Watch, 500)
            .resource("configmaps")
            .times(1),
    );
    let mut w = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert!(w.try_next().await.is_err());
    assert!(matches!(
        w.try_next().await.unwrap(),
        Some(watcher::Event::Init)
    ));
    server.clear_faults();
    assert_eq!(server.count(Verb::Watch, "configmaps"), 2);
    assert_eq!(server.count(Verb::Get, "configmaps"), 4);
}

// ------------------------------------------------------ events, leases ----

#[tokio::test]
async fn event_recorder_creates_then_patches_series() {
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::events::{Event as Publish, EventType, Recorder, Reporter};

    let server = FakeApiServer::new();
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let target = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "runyard".into(),
            instance: Some("r-0".into()),
        },
    );
    let ev = Publish {
        type_: EventType::Warning,
        reason: "Stuck".into(),
        note: Some("nothing happens".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(&ev, &target.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&ev, &target.object_ref(&()))
        .await
        .unwrap();
    let events: Vec<Event> = server.objects(Some("ns"));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.reason.as_deref(), Some("Stuck"));
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("a"));
    assert_eq!(e.series.as_ref().unwrap().count, 2);
    assert_eq!(server.count(Verb::Create, "events.events.k8s.io"), 1);
    assert_eq!(server.count(Verb::Patch, "events.events.k8s.io"), 1);
    assert!(
        server.list("events", Some("ns")).is_empty(),
        "core v1 events are a separate store"
    );
}

#[tokio::test]
async fn lease_create_and_renew_with_conflicts() {
    let server = FakeApiServer::new();
    let api: Api<Lease> = Api::namespaced(server.client(), "runyard");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    api.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        code(
            api.create(&PostParams::default(), &lease)
                .await
                .unwrap_err()
        ),
        409
    );

    // two replicas read the same version; the first renew wins
    let seen_a = api.get("leader").await.unwrap();
    let seen_b = seen_a.clone();
    let mut renew = seen_a.clone();
    renew.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    let renewed = api
        .replace("leader", &PostParams::default(), &renew)
        .await
        .unwrap();
    assert_ne!(renewed.resource_version(), seen_a.resource_version());
    let mut takeover = seen_b;
    takeover.spec.as_mut().unwrap().holder_identity = Some("b".into());
    assert_eq!(
        code(
            api.replace("leader", &PostParams::default(), &takeover)
                .await
                .unwrap_err()
        ),
        409
    );
    assert_eq!(
        api.get("leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("a")
    );
    assert_eq!(server.count(Verb::Update, "leases"), 2);
}

#[tokio::test]
async fn forced_apply_of_a_secret_and_cluster_scoped_webhook_configs() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Secret;

    let server = FakeApiServer::new();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "runyard");
    // as runyard's certs code sends it: nulls for unset fields, forced
    let body = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tls", "namespace": "runyard", "labels": null, "annotations": null},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA=="}});
    let pp = PatchParams::apply("runyard").force();
    let made = secrets
        .patch("tls", &pp, &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(made.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(made.metadata.labels.is_none());
    let again = secrets
        .patch("tls", &pp, &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(
        again.resource_version(),
        made.resource_version(),
        "re-apply is a no-op"
    );
    let no_kind = json!({"metadata": {"name": "tls"}});
    assert_eq!(
        code(
            secrets
                .patch("tls", &pp, &Patch::Apply(&no_kind))
                .await
                .unwrap_err()
        ),
        400
    );

    let hooks: Api<MutatingWebhookConfiguration> = Api::all(server.client());
    let cfg: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "runyard"}, "webhooks": [],
    }))
    .unwrap();
    let made = hooks.create(&PostParams::default(), &cfg).await.unwrap();
    assert!(made.metadata.namespace.is_none());
    let mut stale = made.clone();
    let mut fresh = made.clone();
    fresh.metadata.labels = Some(BTreeMap::from([("ca".into(), "1".into())]));
    hooks
        .replace("runyard", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale.metadata.labels = Some(BTreeMap::from([("ca".into(), "2".into())]));
    assert_eq!(
        code(
            hooks
                .replace("runyard", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );
    let namespaced_url =
        "/apis/admissionregistration.k8s.io/v1/namespaces/ns/mutatingwebhookconfigurations/runyard";
    let req = http::Request::get(namespaced_url).body(vec![]).unwrap();
    let err = server
        .client()
        .request::<MutatingWebhookConfiguration>(req)
        .await;
    assert_eq!(
        code(err.unwrap_err()),
        404,
        "cluster-scoped: no namespaced URL"
    );
    assert_eq!(
        server
            .get("mutatingwebhookconfigurations", "", "runyard")
            .unwrap()["metadata"]["labels"]["ca"],
        "1"
    );
}

/// Over a loopback socket: a client built from the listener's kubeconfig
/// reads, writes and watches as the in-process one does, as the listener's user.
#[tokio::test]
async fn the_api_over_http_for_processes() {
    let server = FakeApiServer::new();
    let listener = server.listen("process-user").await.expect("listen");
    let kubeconfig: kube::config::Kubeconfig =
        serde_norway::from_str(&listener.kubeconfig("ns")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    assert_eq!(config.default_namespace, "ns");
    let client = kube::Client::try_from(config).expect("client");
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("over-http".into());
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let seen = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a watch event")
        .expect("an object")
        .expect("no error");
    assert_eq!(seen.name_any(), "over-http");
    assert!(server.get("configmaps", "ns", "over-http").is_some());
    assert!(server.requests().iter().all(|r| r.user == "process-user"));
}
