//! RFC 6902 JSON Patch computed from two JSON documents.
//!
//! Both sides are serialised through the same k8s-openapi types, so fields the
//! types do not know never show up as `remove` operations. Unlike
//! `json_patch::diff`, arrays whose old elements all survive in order (the
//! common case: runyard inserts containers, volumes, env vars) produce `add`
//! operations at the insertion indices instead of replacing every shifted
//! element, so the run's own list entries are never rewritten.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// The operations that turn `old` into `new`.
pub fn diff(old: &Value, new: &Value) -> Patch {
    let mut ops = Vec::new();
    let mut path = PointerBuf::new();
    diff_at(&mut path, old, new, &mut ops);
    Patch(ops)
}

fn diff_at(path: &mut PointerBuf, old: &Value, new: &Value, ops: &mut Vec<PatchOperation>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (key, old_value) in o {
                path.push_back(key.as_str());
                match n.get(key) {
                    Some(new_value) => diff_at(path, old_value, new_value, ops),
                    None => ops.push(PatchOperation::Remove(RemoveOperation {
                        path: path.clone(),
                    })),
                }
                path.pop_back();
            }
            for (key, new_value) in n {
                if !o.contains_key(key) {
                    path.push_back(key.as_str());
                    ops.push(PatchOperation::Add(AddOperation {
                        path: path.clone(),
                        value: new_value.clone(),
                    }));
                    path.pop_back();
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (ov, nv)) in o.iter().zip(n).enumerate() {
                path.push_back(i);
                diff_at(path, ov, nv, ops);
                path.pop_back();
            }
        }
        (Value::Array(o), Value::Array(n)) => match align(o, n) {
            Some(alignment) => {
                // First the insertions, at ascending indices into the *new*
                // array: applying them in order reproduces its shape, because
                // every earlier index is already final. Then the changes inside
                // surviving elements, addressed by their new index.
                for &i in &alignment.inserted {
                    path.push_back(i);
                    ops.push(PatchOperation::Add(AddOperation {
                        path: path.clone(),
                        value: n[i].clone(),
                    }));
                    path.pop_back();
                }
                for (oi, ni) in alignment.matched {
                    path.push_back(ni);
                    diff_at(path, &o[oi], &n[ni], ops);
                    path.pop_back();
                }
            }
            None => ops.push(PatchOperation::Replace(ReplaceOperation {
                path: path.clone(),
                value: new.clone(),
            })),
        },
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: new.clone(),
        })),
    }
}

struct Alignment {
    /// Indices of `new` that have no counterpart in `old`.
    inserted: Vec<usize>,
    /// (old index, new index) of surviving elements.
    matched: Vec<(usize, usize)>,
}

/// Kubernetes list-map identity: objects with a `name` (containers, volumes,
/// env vars, mounts...) are the same element when their names are equal;
/// anything else only when equal.
fn same(a: &Value, b: &Value) -> bool {
    match (
        a.get("name").and_then(Value::as_str),
        b.get("name").and_then(Value::as_str),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// When every element of `old` survives in `new`, in order (elements were only
/// inserted, and possibly modified), the alignment of the two.
fn align(old: &[Value], new: &[Value]) -> Option<Alignment> {
    if new.len() < old.len() {
        return None;
    }
    let mut alignment = Alignment {
        inserted: Vec::with_capacity(new.len() - old.len()),
        matched: Vec::with_capacity(old.len()),
    };
    let mut next_old = 0;
    for (i, value) in new.iter().enumerate() {
        if next_old < old.len() && same(&old[next_old], value) {
            alignment.matched.push((next_old, i));
            next_old += 1;
        } else {
            alignment.inserted.push(i);
        }
    }
    (next_old == old.len()).then_some(alignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(old: Value, new: Value) -> Patch {
        let patch = diff(&old, &new);
        let mut applied = old.clone();
        json_patch::patch(&mut applied, &patch).expect("patch applies");
        assert_eq!(applied, new, "patch {patch:?}");
        patch
    }

    #[test]
    fn insertion_at_front_is_one_add() {
        let p = roundtrip(
            json!({"a": [{"name": "user"}]}),
            json!({"a": [{"name": "ours"}, {"name": "user"}]}),
        );
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].path().to_string(), "/a/0");
    }

    #[test]
    fn shifted_and_modified_named_elements_are_patched_in_place() {
        let p = roundtrip(
            json!({"c": [{"name": "user", "env": [1]}]}),
            json!({"c": [{"name": "ours"}, {"name": "user", "env": [1, 2]}]}),
        );
        let paths: Vec<String> = p.0.iter().map(|o| o.path().to_string()).collect();
        assert_eq!(paths, ["/c/0", "/c/1/env/1"]);
    }

    #[test]
    fn keys_with_slash_and_tilde_are_escaped() {
        let p = roundtrip(
            json!({"l": {}}),
            json!({"l": {"runyard.dev/pool": "x", "a~b": "y"}}),
        );
        let paths: Vec<String> = p.0.iter().map(|o| o.path().to_string()).collect();
        assert!(
            paths.contains(&"/l/runyard.dev~1pool".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&"/l/a~0b".to_string()), "{paths:?}");
    }

    #[test]
    fn reorder_and_removal_fall_back_to_replace() {
        roundtrip(json!([1, 2, 3]), json!([3, 2, 1, 4]));
        roundtrip(json!([1, 2, 3]), json!([1, 3]));
        roundtrip(json!({"a": 1, "b": 2}), json!({"b": 3}));
        roundtrip(json!({"a": [1]}), json!({"a": [1, 5, 1, 6]}));
    }

    #[test]
    fn equal_documents_give_an_empty_patch() {
        let v = json!({"a": [1, {"b": null}], "c": "d"});
        assert!(diff(&v, &v).0.is_empty());
    }
}
