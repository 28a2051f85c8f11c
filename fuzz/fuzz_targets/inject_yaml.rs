//! (c) Multi-document YAML → the offline `runyard inject` path.
//!
//! Invariants: no panic; the engine's patch always applies to the document
//! as written; the output injected again is the output.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use runyard::injection::manifests::{inject_yaml, InjectFileError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let injector = common::injector(data.len() % 2 == 1);
    let pools = common::pools();
    match inject_yaml(text, injector, pools, "ci") {
        Ok(out) => {
            let again = inject_yaml(&out, injector, pools, "ci")
                .unwrap_or_else(|e| panic!("the output does not inject again: {e}\n{out}"));
            assert_eq!(again, out, "injecting the output changed it");
        }
        Err(InjectFileError::Invalid {
            kind: "patch",
            detail,
            ..
        }) => {
            panic!("the engine's patch does not apply: {detail}")
        }
        Err(_) => {}
    }
});
