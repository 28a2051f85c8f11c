//! The checked-in CRDs equal `runyard crd`, and their schemas are structural
//! (what a real API server accepts), and small enough for a client-side apply.

use serde_json::Value;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = runyard::crd::crds_yaml().expect("generate");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/webhook-config/crds/crds.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &generated).expect("write");
    }
    let checked_in = std::fs::read_to_string(path).expect("webhook-config/crds/crds.yaml");
    assert!(
        checked_in == generated,
        "webhook-config/crds/crds.yaml drifted from the Rust types: run `cargo run -- crd > webhook-config/crds/crds.yaml`"
    );
}

/// Structural schema rules (apiextensions): every node has a type unless it is
/// int-or-string or preserves unknown fields; no $ref; no types inside
/// anyOf/oneOf/allOf/not; additionalProperties never alongside properties.
fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    if obj.contains_key("$ref") {
        errors.push(format!("{path}: $ref"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        errors.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(format!("{path}: properties and additionalProperties"));
    }
    for junction in ["anyOf", "oneOf", "allOf"] {
        for (i, sub) in obj
            .get(junction)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for forbidden in [
                "type",
                "properties",
                "items",
                "additionalProperties",
                "default",
                "nullable",
            ] {
                if sub.get(forbidden).is_some() {
                    errors.push(format!(
                        "{path}.{junction}[{i}]: {forbidden} inside a junction"
                    ));
                }
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), errors);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), errors);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(extra, &format!("{path}{{}}"), errors);
    }
}

#[test]
fn schemas_are_structural_and_embed_core_types() {
    for crd in runyard::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .expect("schema"),
            )
            .expect("serialise");
            let mut errors = Vec::new();
            check_structural(&schema, &name, &mut errors);
            assert!(
                errors.is_empty(),
                "{name} is not structural:\n{}",
                errors.join("\n")
            );
            let spec = &schema["properties"]["spec"];
            assert_ne!(
                spec.get("x-kubernetes-preserve-unknown-fields"),
                Some(&Value::Bool(true)),
                "{name}: spec must not be a blanket preserve-unknown-fields"
            );
        }
    }
    let pool = serde_json::to_value(&runyard::crd::crds()[0]).expect("serialise");
    let pod = &pool["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["pod"]["properties"];
    // Embedded core types carry their real schema, e.g. a container's image and a volume's emptyDir.
    assert_eq!(
        pod["additionalSidecarContainers"]["items"]["properties"]["image"]["type"],
        "string"
    );
    assert_eq!(
        pod["volumes"]["items"]["properties"]["emptyDir"]["type"],
        "object"
    );
    let size = pool
        .get("spec")
        .map(|s| s.to_string().len())
        .unwrap_or_default();
    assert!(
        size < 262_144,
        "WorkerPool CRD is {size} bytes, too big for client-side apply"
    );
    let pool_size = &pool["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["poolSize"];
    assert_eq!(pool_size["minimum"], 0.0);
    assert_eq!(pool_size["default"], 1);
}

/// The README says a client-side `kubectl apply` of the CRDs works: the
/// `last-applied-configuration` annotation (the object as compact JSON) must
/// stay well under the API server's 256 KiB limit on all annotations.
#[test]
fn crds_fit_a_client_side_apply_annotation() {
    for crd in runyard::crd::crds() {
        let json = serde_json::to_string(&crd).expect("json");
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert!(
            json.len() < 128 * 1024,
            "{name}: {} bytes as last-applied JSON; the README promises client-side apply works",
            json.len()
        );
        eprintln!("{name}: {} bytes of last-applied JSON", json.len());
    }
}
