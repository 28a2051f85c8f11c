//! (a) AdmissionReview bytes → the webhook's review handler → response bytes.
//!
//! Invariants: no panic; an answered review is a JSON AdmissionReview with the
//! request's uid; a patch decodes, applies to the request's object and gives
//! a valid Pod/Job; reviewing the patched object again changes nothing.

#![no_main]

#[path = "common.rs"]
mod common;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use runyard::webhook::review::{self, Decision};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    for container_mode in [false, true] {
        check(data, container_mode);
    }
});

fn check(data: &[u8], container_mode: bool) {
    let injector = common::injector(container_mode);
    let pools = common::pools();
    let Ok(handled) = review::handle(data, injector, pools) else {
        return;
    };
    let response: Value = serde_json::from_slice(&handled.body).expect("the response is JSON");
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    // Fields the handler skips unread may hold invalid UTF-8 or a lone
    // surrogate escape (`"\uDEEB"`: serde skips both without validating);
    // the ones it reads were validated. Such a body cannot be re-read as a
    // `Value` here, so there is nothing to compare against.
    let Ok(request) = serde_json::from_str::<Value>(&String::from_utf8_lossy(data)) else {
        return;
    };
    assert_eq!(
        response["response"]["uid"].as_str(),
        Some(handled.uid.as_str())
    );
    assert_eq!(
        request["request"]["uid"].as_str(),
        Some(handled.uid.as_str())
    );
    let allowed = response["response"]["allowed"].as_bool().expect("allowed");
    assert_eq!(allowed, !matches!(handled.decision, Decision::Denied(_)));
    let Some(patch) = response["response"]["patch"].as_str() else {
        assert_ne!(handled.decision, Decision::Patched);
        return;
    };
    assert_eq!(handled.decision, Decision::Patched);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies to request.object");
    let is_job = request["request"]["kind"]["kind"] == "Job";
    // The patch never makes a valid object invalid. A field that no path of
    // runyard reads or writes is not checked by it: `metadata.managedFields`
    // (the API server's), and on the fast path for Pod CREATE
    // (`injection::fast`) every member the view walks unread, as the API
    // server sends it from its own types. A crafted body may hold anything
    // there (an invalid `time`, a probe's port as a bool); the object was
    // not valid before the patch either, and the API server, which builds
    // the object it sends, never sends one.
    let before = valid(&request["request"]["object"], is_job);
    if let Err(after) = valid(&object, is_job) {
        assert!(
            before.is_err(),
            "the patch made a valid object invalid: {after}"
        );
        return;
    }
    if before.is_ok() && !is_job && request["request"]["operation"] == "CREATE" {
        fast_is_engine(injector, pools, &request, &object);
    }
    // Idempotent: the same review of the patched object changes nothing.
    let mut again = request.clone();
    again["request"]["object"] = object;
    let body = serde_json::to_vec(&again).expect("serialise");
    let second = review::handle(&body, injector, pools).expect("still readable");
    assert_eq!(
        second.decision,
        Decision::Unchanged,
        "second pass: {:?}",
        second.message
    );
}

/// `object` without `metadata.managedFields` (see `check`).
fn unmanaged(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

/// `object` (without `metadata.managedFields`) as a typed Job or Pod.
fn valid(object: &Value, is_job: bool) -> Result<(), serde_json::Error> {
    let typed = unmanaged(object);
    if is_job {
        serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(typed).map(drop)
    } else {
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(typed).map(drop)
    }
}

/// Differential: when the fast path takes a valid Pod CREATE, its patch
/// gives the pod the engine's full path injects (`patched`, the review's
/// answer, is that pod too).
fn fast_is_engine(
    injector: &runyard::injection::Injector,
    pools: &runyard::injection::StaticPools,
    request: &Value,
    patched: &Value,
) {
    let object = &request["request"]["object"];
    let namespace = request["request"]["namespace"].as_str();
    let username = request["request"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default();
    let requester = injector.trust.requester(username);
    let Some(fast) = injector.fast_pod_create(&object.to_string(), namespace, pools, requester)
    else {
        return;
    };
    let mut applied = object.clone();
    let ops = fast
        .operations()
        .expect("the fast path's patch is a JSON Patch");
    json_patch::patch(&mut applied, &ops).expect("the fast path's patch applies");
    let pod = typed_pod(object, "valid above");
    let ns = namespace
        .filter(|n| !n.is_empty())
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default()
        .to_string();
    let full = injector.mutate_as(pod, &ns, pools, requester);
    let Ok(runyard::injection::Mutation::Mutated { object: engine, .. }) = full else {
        panic!("the fast path patched a pod the engine does not: {full:?}");
    };
    let applied = typed_pod(&applied, "the fast path's pod is a valid Pod");
    assert_eq!(applied, *engine, "the fast path's pod is the engine's");
    let answered = typed_pod(patched, "valid above");
    assert_eq!(answered, applied, "the review's answer is that pod");
}

/// `object` without `metadata.managedFields` as a typed Pod, which it is.
fn typed_pod(object: &Value, what: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(unmanaged(object)).unwrap_or_else(|e| panic!("{what}: {e}"))
}
