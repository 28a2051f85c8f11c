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
    assert_eq!(request["request"]["uid"].as_str(), Some(handled.uid.as_str()));
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
    // `metadata.managedFields` is the API server's: the handler never reads
    // or builds it (issue 17) and no patch touches it, so it is not part of
    // what runyard must leave valid (the crafted bodies may hold any bytes
    // there, e.g. an invalid `time`).
    let mut typed = object.clone();
    if let Some(meta) = typed.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    if is_job {
        serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(typed)
            .expect("the patched object is a Job");
    } else {
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(typed)
            .expect("the patched object is a Pod");
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
