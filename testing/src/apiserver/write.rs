//! Writes as the real server makes them: create (generateName, system
//! fields), update and patch (preconditions, status subresource isolation,
//! generation, admission hooks, no-op detection) and delete (preconditions,
//! finalizers).

use super::patch::{apply_patch, parse_applied, server_side_apply};
use super::serve::{json_response, Ctx, ResBody};
use super::status::Failure;
use super::store::{
    meta, meta_mut, meta_str, names, now_rfc3339, rv_of, spec_changed, ResId, Shared, State,
};
use super::{RequestInfo, ResourceType};
use http::Response;
use serde_json::{json, Value};
use std::sync::Arc;

fn parse_object(body: &[u8]) -> Result<Value, Failure> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::bad_request(format!("the request body is not a valid object: {e}"))
    })?;
    if !v.is_object() {
        return Err(Failure::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Checks the body's namespace against the URL's.
fn check_namespace(c: &Ctx, obj: &Value) -> Result<(), Failure> {
    match (
        meta_str(obj, "namespace").filter(|n| !n.is_empty()),
        c.ns.as_deref(),
    ) {
        (Some(body), Some(url)) if c.rt.namespaced && body != url => Err(Failure::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn check_name(c: &Ctx, obj: &Value) -> Result<(), Failure> {
    match meta_str(obj, "name").filter(|n| !n.is_empty()) {
        Some(n) if n != c.name() => Err(Failure::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            c.name()
        ))),
        _ => Ok(()),
    }
}

fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn run_hooks(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    create: bool,
    obj: &mut Value,
    info: &RequestInfo,
) -> Result<(), Failure> {
    let hooks: Vec<_> = {
        let st = shared.lock();
        let all = if create {
            &st.create_hooks
        } else {
            &st.update_hooks
        };
        all.iter()
            .filter(|(p, _)| names(p, rt))
            .map(|(_, h)| Arc::clone(h))
            .collect()
    };
    for hook in hooks {
        hook(obj, info).map_err(|(code, msg)| Failure::from_code(code, msg))?;
    }
    Ok(())
}

/// Stores a new object as create does: name (or generateName), uid,
/// timestamps, no status for resources with a status subresource.
pub(crate) fn create_locked(
    st: &mut State,
    res: ResId,
    ns: &str,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, Failure> {
    let rt = st.rt(res);
    if !rv_of(&obj).is_empty() {
        return Err(Failure::from_code(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
            Some(prefix) => {
                let prefix = prefix.to_string();
                loop {
                    let candidate = format!("{prefix}{}", st.name_suffix());
                    if !st.objects.contains_key(&(res, ns.to_string(), candidate.clone())) {
                        break candidate;
                    }
                }
            }
            None => return Err(Failure::invalid(format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", rt.qualified()))),
        },
    };
    if !dns_subdomain(&name) {
        return Err(Failure::invalid(format!("{} {name:?} is invalid: metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character", rt.qualified())));
    }
    let key = (res, ns.to_string(), name.clone());
    if st.objects.contains_key(&key) {
        return Err(Failure::already_exists(&rt, &name));
    }
    st.normalize(res, ns, &name, &mut obj);
    st.fill_create(res, &mut obj);
    if rt.status_subresource {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
            if rt.group.is_empty() && rt.plural == "pods" {
                o.insert("status".into(), json!({"phase": "Pending"}));
            }
        }
    }
    if dry_run {
        return Ok(obj);
    }
    Ok(st.insert_new(key, obj))
}

pub(crate) fn create(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let mut obj = parse_object(&c.body)?;
    check_namespace(c, &obj)?;
    let name = meta_str(&obj, "name").map(str::to_string);
    run_hooks(
        shared,
        &c.rt,
        true,
        &mut obj,
        &c.info(name, None, c.dry_run()),
    )?;
    let ns = if c.rt.namespaced {
        c.ns.as_deref().unwrap_or("")
    } else {
        ""
    };
    let stored = create_locked(&mut shared.lock(), c.res, ns, obj, c.dry_run())?;
    Ok(json_response(201, &c.out(&stored)))
}

/// What an update stores: the status subresource changes only `.status`;
/// the main resource keeps system metadata and (with a status subresource)
/// the old status, and bumps generation on spec changes.
pub(crate) fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    mut cand: Value,
    status_only: bool,
) -> Value {
    if status_only {
        let mut new = old.clone();
        if let Some(o) = new.as_object_mut() {
            match cand.get("status") {
                Some(s) => o.insert("status".into(), s.clone()),
                None => o.remove("status"),
            };
        }
        if let Some(mf) = meta(&cand).and_then(|m| m.get("managedFields")) {
            meta_mut(&mut new).insert("managedFields".into(), mf.clone());
        }
        return new;
    }
    let om = meta(old).cloned().unwrap_or_default();
    let m = meta_mut(&mut cand);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match om.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    if !m.contains_key("managedFields") {
        if let Some(mf) = om.get("managedFields") {
            m.insert("managedFields".into(), mf.clone());
        }
    }
    if rt.status_subresource {
        if let Some(o) = cand.as_object_mut() {
            match old.get("status") {
                Some(s) => o.insert("status".into(), s.clone()),
                None => o.remove("status"),
            };
        }
    }
    if spec_changed(old, &cand) {
        if let Some(g) = om.get("generation").and_then(Value::as_i64) {
            meta_mut(&mut cand).insert("generation".into(), json!(g + 1));
        }
    }
    cand
}

/// Read, compute, admit, write; retried if the object changed meanwhile.
fn write_loop(
    shared: &Arc<Shared>,
    c: &Ctx,
    compute: impl Fn(&Value) -> Result<Value, Failure>,
) -> Result<Response<ResBody>, Failure> {
    let key = c.key();
    for _ in 0..10 {
        let old = shared.lock().objects.get(&key).cloned();
        let old = old.ok_or_else(|| Failure::not_found(&c.rt, c.name()))?;
        let mut cand = compute(&old)?;
        let cand_rv = rv_of(&cand);
        if !cand_rv.is_empty() && cand_rv != rv_of(&old) {
            return Err(Failure::conflict(&c.rt, c.name()));
        }
        let info = c.info(c.name.clone(), Some(old.clone()), c.dry_run());
        run_hooks(shared, &c.rt, false, &mut cand, &info)?;
        let status_only = c.sub.as_deref() == Some("status");
        let mut new = prepare_update(&c.rt, &old, cand, status_only);
        let mut st = shared.lock();
        if st.objects.get(&key).map(rv_of) != Some(rv_of(&old)) {
            continue;
        }
        st.normalize(c.res, &key.1, &key.2, &mut new);
        if c.dry_run() {
            return Ok(json_response(200, &c.out(&new)));
        }
        let stored = st.write_update(key.clone(), &old, new);
        return Ok(json_response(200, &c.out(&stored)));
    }
    Err(Failure::conflict(&c.rt, c.name()))
}

pub(crate) fn update(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let body = parse_object(&c.body)?;
    check_name(c, &body)?;
    check_namespace(c, &body)?;
    write_loop(shared, c, |_| Ok(body.clone()))
}

pub(crate) fn patch(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    if c.content_type != "application/apply-patch+yaml" {
        if c.content_type == "application/strategic-merge-patch+json" && !c.rt.builtin {
            return Err(Failure::new(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources",
            ));
        }
        return write_loop(shared, c, |old| {
            let mut target = old.clone();
            apply_patch(&c.content_type, &mut target, &c.body)?;
            Ok(target)
        });
    }
    let manager = c.q.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
        Failure::invalid("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
    })?;
    let mut applied = parse_applied(&c.body)?;
    if applied.get("kind").and_then(Value::as_str) != Some(c.rt.kind.as_str()) {
        return Err(Failure::bad_request(format!(
            "the apply patch must have kind {:?}",
            c.rt.kind
        )));
    }
    if let Some(o) = applied.as_object_mut() {
        o.entry("apiVersion")
            .or_insert_with(|| json!(c.rt.api_version()));
    }
    check_name(c, &applied)?;
    check_namespace(c, &applied)?;
    let force = c.q.flag("force");
    let exists = shared.lock().objects.contains_key(&c.key());
    if !exists && c.sub.is_none() {
        let mut obj = server_side_apply(None, &applied, manager, force, None, now_rfc3339())?;
        meta_mut(&mut obj).insert("name".into(), json!(c.name()));
        run_hooks(
            shared,
            &c.rt,
            true,
            &mut obj,
            &c.info(c.name.clone(), None, c.dry_run()),
        )?;
        let key = c.key();
        let stored = create_locked(&mut shared.lock(), c.res, &key.1, obj, c.dry_run())?;
        return Ok(json_response(201, &c.out(&stored)));
    }
    let sub = c.sub.as_deref();
    write_loop(shared, c, |old| {
        server_side_apply(Some(old), &applied, manager, force, sub, now_rfc3339())
    })
}

pub(crate) fn delete(shared: &Arc<Shared>, c: &Ctx) -> Result<Response<ResBody>, Failure> {
    let opts = if c.body.is_empty() {
        json!({})
    } else {
        parse_object(&c.body)?
    };
    let dry_run = c.dry_run()
        || opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let key = c.key();
    let mut st = shared.lock();
    let old = st
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| Failure::not_found(&c.rt, c.name()))?;
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(want) = opts
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
        {
            let actual = meta_str(&old, field).unwrap_or("");
            if want != actual {
                return Err(Failure::from_code(409, format!("Precondition failed: {label} in precondition: {want}, {label} in object meta: {actual}")));
            }
        }
    }
    if dry_run {
        return Ok(json_response(200, &c.out(&old)));
    }
    let gone = st.delete(&key).unwrap_or(old);
    Ok(json_response(200, &c.out(&gone)))
}
