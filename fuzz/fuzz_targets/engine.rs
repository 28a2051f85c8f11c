//! (b) A Pod or Job (JSON, mutated from the captured fixtures) → the engine.
//!
//! The first byte picks the kind, the sidecar mode, the pool and who sends
//! the request; the rest is the object. Invariants: a returned patch applies
//! to the object as written (the API server applies it to the JSON it holds,
//! not to runyard's typed view of it), the result deserialises as the same
//! kind and equals the engine's object, and a second pass changes nothing.

#![no_main]

#[path = "common.rs"]
mod common;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use runyard::injection::{Mutation, Requester, RunObject};
use serde_json::Value;

const POOLS: [&str; 5] = ["builders", "sidecars", "strict", "privileged", "tight"];

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let Ok(mut raw) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let container_mode = config & 0b10 != 0;
    let pool = POOLS[usize::from((config >> 2) & 0b111) % POOLS.len()];
    let requester = match config >> 5 {
        0..=3 => Requester::User,
        4 | 5 => Requester::JobController,
        _ => Requester::Controller,
    };
    // Point the object at the chosen pool, keeping everything else as fuzzed.
    if let Some(labels) = raw
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        if labels.contains_key("runyard.dev/pool") {
            labels.insert("runyard.dev/pool".into(), pool.into());
        }
    }
    if config & 1 == 0 {
        check::<Pod>(raw, container_mode, requester);
    } else {
        check::<Job>(raw, container_mode, requester);
    }
});

fn check<R: RunObject + std::fmt::Debug>(raw: Value, container_mode: bool, requester: Requester) {
    let Ok(obj) = serde_json::from_value::<R>(raw.clone()) else {
        return;
    };
    let injector = common::injector(container_mode);
    let pools = common::pools();
    let obj = obj.without_managed_fields();
    let Ok(Mutation::Mutated { object, patch }) = injector.mutate_as(obj, "ci", pools, requester)
    else {
        return;
    };
    let mut applied = raw;
    let ops = patch.operations().expect("the patch is a JSON Patch");
    if let Err(e) = json_patch::patch(&mut applied, &ops) {
        panic!("the patch does not apply to the object as written: {e}\npatch: {patch:?}");
    }
    let reparsed: R = serde_json::from_value(applied).expect("the patched object deserialises");
    assert_eq!(&reparsed.without_managed_fields(), &*object);
    let second = injector.mutate_as((*object).clone(), "ci", pools, requester);
    assert!(
        matches!(second, Ok(Mutation::Unchanged)),
        "a second pass changed something: {second:?}"
    );
}
