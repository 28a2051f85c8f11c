//! Patches: JSON merge (RFC 7386; strategic merge is treated as one), JSON
//! patch (RFC 6902) and a server-side-apply subset with field ownership per
//! applier.

use super::serve::Failure;
use super::store::{meta, meta_mut};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

type Path = Vec<String>;

/// Metadata the server owns: never tracked as applied fields.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Applies a patch body of the given content type to `target`.
pub(crate) fn apply_patch(
    content_type: &str,
    target: &mut Value,
    body: &[u8],
) -> Result<(), Failure> {
    match content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| Failure::bad_request(format!("invalid merge patch: {e}")))?;
            if !patch.is_object() {
                return Err(Failure::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(target, &patch);
            Ok(())
        }
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| Failure::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &patch.0)
                .map_err(|e| Failure::invalid(format!("the patch could not be applied: {e}")))
        }
        other => Err(Failure::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other}"),
        )),
    }
}

/// The applied configuration of an apply patch: JSON, else YAML.
pub(crate) fn parse_applied(body: &[u8]) -> Result<Value, Failure> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => serde_norway::from_slice(body)
            .map_err(|e| Failure::bad_request(format!("invalid apply patch: {e}")))?,
    };
    if !v.is_object() {
        return Err(Failure::bad_request("an apply patch must be an object"));
    }
    Ok(v)
}

fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        // nulls are "not applied"
        _ if v.is_null() => {}
        // scalars, lists (atomic) and empty maps are owned whole
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The leaf paths an applied configuration sets.
fn applied_fields(applied: &Value) -> BTreeSet<Path> {
    let mut v = applied.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
    }
    let m = meta_mut(&mut v);
    for k in SYSTEM_META {
        m.remove(*k);
    }
    if m.is_empty() {
        v.as_object_mut().map(|o| o.remove("metadata"));
    }
    let mut out = BTreeSet::new();
    leaves(&v, &mut Vec::new(), &mut out);
    out.remove(&Vec::new());
    out
}

fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = json!({});
    for path in set {
        let mut node = &mut root;
        for k in path {
            node = node
                .as_object_mut()
                .map(|o| o.entry(format!("f:{k}")).or_insert_with(|| json!({})))
                .expect("fieldsV1 nodes are objects");
        }
    }
    root
}

fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<_> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, c)| k.strip_prefix("f:").map(|k| (k, c)))
            .collect();
        if children.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        for (k, c) in children {
            prefix.push(k.to_string());
            walk(c, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn remove_at(v: &mut Value, path: &[String]) {
    if let Some((last, parents)) = path.split_last() {
        let mut node = v;
        for k in parents {
            match node.get_mut(k) {
                Some(n) => node = n,
                None => return,
            }
        }
        if let Some(o) = node.as_object_mut() {
            o.remove(last);
        }
    }
}

/// Merges `src` into `dst`: maps key by key, anything else replaced; nulls
/// in `src` are ignored.
fn deep_merge(dst: &mut Value, src: &Value) {
    match (dst.as_object_mut(), src.as_object()) {
        (Some(d), Some(s)) => {
            for (k, v) in s {
                if v.is_null() {
                    continue;
                }
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *dst = src.clone(),
    }
}

fn path_str(p: &Path) -> String {
    p.iter().map(|k| format!(".{k}")).collect()
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object
/// does not exist yet). Returns the object to store, with the manager's
/// managedFields entry refreshed.
pub(crate) fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: String,
) -> Result<Value, Failure> {
    let mut applied = applied.clone();
    meta_mut(&mut applied).remove("managedFields");
    let fields = applied_fields(&applied);
    let api_version = applied.get("apiVersion").cloned().unwrap_or(Value::Null);
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Map<String, Value>> = meta(&result)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| e.as_object().cloned()).collect())
        .unwrap_or_default();
    let is_mine = |e: &Map<String, Value>| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let owned = |e: &Map<String, Value>| from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));

    // Conflicts: a field another applier owns, applied with another value.
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| !is_mine(e)) {
        let other = e
            .get("manager")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut theirs = owned(e);
        let clashing: Vec<Path> = theirs
            .intersection(&fields)
            .filter(|p| value_at(&result, p) != value_at(&applied, p))
            .cloned()
            .collect();
        if force {
            for p in &clashing {
                theirs.remove(p);
            }
            e.insert("fieldsV1".into(), to_fields_v1(&theirs));
        }
        conflicts.extend(clashing.into_iter().map(|p| (other.clone(), p)));
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with {m:?}"), "field": path_str(p)}))
            .collect();
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with {m:?}: {}", path_str(p)))
            .collect();
        let msg = format!(
            "Apply failed with {} conflict(s): {}",
            conflicts.len(),
            list.join("; ")
        );
        return Err(Failure::new(409, "Conflict", msg).with_causes(causes));
    }
    entries.retain(|e| is_mine(e) || !owned(e).is_empty());

    // Fields this manager applied before but not now, owned by nobody else, go.
    let previous = entries
        .iter()
        .find(|e| is_mine(e))
        .map(owned)
        .unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(owned)
        .collect();
    for p in previous.difference(&fields) {
        if !others.contains(p) {
            remove_at(&mut result, p);
        }
    }
    deep_merge(&mut result, &applied);

    if previous != fields || !entries.iter().any(is_mine) {
        entries.retain(|e| !is_mine(e));
        let mut entry = json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&fields),
        });
        if let (Some(sub), Some(o)) = (subresource, entry.as_object_mut()) {
            o.insert("subresource".into(), json!(sub));
        }
        if let Some(o) = entry.as_object_mut() {
            entries.push(o.clone());
        }
    }
    meta_mut(&mut result).insert(
        "managedFields".into(),
        Value::Array(entries.into_iter().map(Value::Object).collect()),
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v", "l": "w"}});
        let f = applied_fields(&applied);
        let v1 = to_fields_v1(&f);
        assert_eq!(
            v1,
            json!({"f:data": {"f:k": {}, "f:l": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
        );
        assert_eq!(from_fields_v1(&v1), f);
    }

    #[test]
    fn apply_conflicts_force_and_removal() {
        let now = || "2026-01-01T00:00:00Z".to_string();
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1", "only-a": "x"}});
        let live = server_side_apply(None, &a, "a", false, None, now()).expect("create");
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "2"}});
        let err =
            server_side_apply(Some(&live), &b, "b", false, None, now()).expect_err("conflict");
        assert_eq!(err.code, 409);
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}});
        let shared =
            server_side_apply(Some(&live), &same, "b", false, None, now()).expect("same value");
        let forced = server_side_apply(Some(&shared), &b, "b", true, None, now()).expect("force");
        assert_eq!(forced["data"], json!({"k": "2", "only-a": "x"}));
        // a drops only-a: removed; k is still b's.
        let a2 =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        let after = server_side_apply(Some(&forced), &a2, "a", false, None, now()).expect("a2");
        assert_eq!(after["data"], json!({"k": "2"}));
    }
}
