//! RFC 6902 JSON Patch computed from two JSON documents, written as it is
//! computed: every operation goes straight into the patch's bytes (its value
//! serialised from the typed element or the JSON value in place, never copied
//! into an intermediate `serde_json::Value` or `json_patch` operation).
//!
//! Both sides are serialised through the same k8s-openapi types, so fields the
//! types do not know never show up as `remove` operations. Unlike
//! `json_patch::diff`, arrays whose old elements all survive in order (the
//! common case: runyard inserts containers, volumes, env vars) produce `add`
//! operations at the insertion indices instead of replacing every shifted
//! element, so the run's own list entries are never rewritten.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume, VolumeMount};
use serde::Serialize;
use serde_json::Value;

/// Error turning a typed object into JSON (not expected for k8s-openapi types).
pub type SerError = serde_json::Error;

/// A JSON Patch document (a JSON array of operations), already serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPatch {
    json: Vec<u8>,
    len: usize,
}

impl JsonPatch {
    /// How many operations.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The patch document, as sent in an AdmissionReview response.
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.json
    }

    /// The operations, parsed (to apply the patch to a `serde_json::Value`).
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

impl std::fmt::Debug for JsonPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.json))
    }
}

/// A JSON Pointer (RFC 6901) being walked: tokens are escaped as pushed.
pub struct Pointer {
    text: String,
    marks: Vec<usize>,
}

impl Default for Pointer {
    /// Room for the paths of a pod's patch without growing.
    fn default() -> Self {
        Pointer {
            text: String::with_capacity(128),
            marks: Vec::with_capacity(16),
        }
    }
}

impl Pointer {
    /// Appends an object member's name.
    pub fn push_back(&mut self, key: &str) {
        self.marks.push(self.text.len());
        self.text.push('/');
        if key.contains(['~', '/']) {
            for c in key.chars() {
                match c {
                    '~' => self.text.push_str("~0"),
                    '/' => self.text.push_str("~1"),
                    c => self.text.push(c),
                }
            }
        } else {
            self.text.push_str(key);
        }
    }

    /// Appends an array index.
    pub fn push_index(&mut self, i: usize) {
        self.marks.push(self.text.len());
        self.text.push('/');
        self.text.push_str(itoa::Buffer::new().format(i));
    }

    /// Removes the last token.
    pub fn pop_back(&mut self) {
        if let Some(mark) = self.marks.pop() {
            self.text.truncate(mark);
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The operations of a patch being built, serialised as they come.
pub struct Ops {
    json: Vec<u8>,
    len: usize,
}

impl Default for Ops {
    fn default() -> Self {
        let mut json = Vec::with_capacity(8 * 1024);
        json.push(b'[');
        Self { json, len: 0 }
    }
}

impl Ops {
    fn head(&mut self, op: &str, path: &Pointer) -> Result<(), SerError> {
        if self.len > 0 {
            self.json.push(b',');
        }
        self.len += 1;
        self.json.extend_from_slice(br#"{"op":""#);
        self.json.extend_from_slice(op.as_bytes());
        self.json.extend_from_slice(br#"","path":"#);
        super::json::write_str(&mut self.json, path.as_str())
    }

    fn with_value<T: Serialize + ?Sized>(
        &mut self,
        op: &str,
        path: &Pointer,
        value: &T,
    ) -> Result<(), SerError> {
        self.head(op, path)?;
        self.json.extend_from_slice(br#","value":"#);
        super::json::write(&mut self.json, value)?;
        self.json.push(b'}');
        Ok(())
    }

    /// `add` of `value` at `path`.
    pub fn add<T: Serialize + ?Sized>(
        &mut self,
        path: &Pointer,
        value: &T,
    ) -> Result<(), SerError> {
        self.with_value("add", path, value)
    }

    /// `replace` of what is at `path` with `value`.
    pub fn replace<T: Serialize + ?Sized>(
        &mut self,
        path: &Pointer,
        value: &T,
    ) -> Result<(), SerError> {
        self.with_value("replace", path, value)
    }

    /// `op` at `path` of the value `write` appends as JSON.
    fn with_written(
        &mut self,
        op: &str,
        path: &Pointer,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), SerError>,
    ) -> Result<(), SerError> {
        self.head(op, path)?;
        self.json.extend_from_slice(br#","value":"#);
        write(&mut self.json)?;
        self.json.push(b'}');
        Ok(())
    }

    /// `add` of the JSON text `json` (already serialised) at `path`.
    pub fn add_raw(&mut self, path: &Pointer, json: &[u8]) -> Result<(), SerError> {
        self.head("add", path)?;
        self.json.extend_from_slice(br#","value":"#);
        self.json.extend_from_slice(json);
        self.json.push(b'}');
        Ok(())
    }

    /// `remove` of what is at `path`.
    pub fn remove(&mut self, path: &Pointer) -> Result<(), SerError> {
        self.head("remove", path)?;
        self.json.push(b'}');
        Ok(())
    }

    pub fn finish(mut self) -> JsonPatch {
        self.json.push(b']');
        JsonPatch {
            json: self.json,
            len: self.len,
        }
    }
}

/// The operations that turn `old` into `new`.
pub fn diff(old: &Value, new: &Value) -> Result<JsonPatch, SerError> {
    let mut ops = Ops::default();
    diff_at(&mut Pointer::default(), old, new, &mut ops)?;
    Ok(ops.finish())
}

fn diff_at(path: &mut Pointer, old: &Value, new: &Value, ops: &mut Ops) -> Result<(), SerError> {
    if old == new {
        return Ok(());
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (key, old_value) in o {
                path.push_back(key.as_str());
                match n.get(key) {
                    // One `add` of a whole list at an object member: the
                    // typed side serialises a required list
                    // (`spec.containers`) as `[]` even where the document has
                    // no such member (or `null`): element `add`s at `/0` would
                    // not apply there, while an `add` of the member applies in
                    // every case (it replaces `[]`).
                    Some(new_value) if is_empty_array(old_value) && old_value != new_value => {
                        ops.add(path, new_value)?;
                    }
                    Some(new_value) => diff_at(path, old_value, new_value, ops)?,
                    None => ops.remove(path)?,
                }
                path.pop_back();
            }
            for (key, new_value) in n {
                if !o.contains_key(key) {
                    path.push_back(key.as_str());
                    ops.add(path, new_value)?;
                    path.pop_back();
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (ov, nv)) in o.iter().zip(n).enumerate() {
                path.push_index(i);
                diff_at(path, ov, nv, ops)?;
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
                    path.push_index(i);
                    ops.add(path, &n[i])?;
                    path.pop_back();
                }
                for (oi, ni) in alignment.matched {
                    path.push_index(ni);
                    diff_at(path, &o[oi], &n[ni], ops)?;
                    path.pop_back();
                }
            }
            None => ops.replace(path, new)?,
        },
        _ => ops.replace(path, new)?,
    }
    Ok(())
}

fn is_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
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

// ---------------------------------------------------------------------------
// Typed diff: the same operations as `diff` over the serialised objects, but
// elements that compare equal as Rust values are never serialised. The heavy
// lists (containers, env, mounts, volumes) are diffed element by element, and
// what is added is serialised straight from the typed element; the small
// remainder of each struct goes through `diff` as JSON, and only when it
// changed.

fn value<T: Serialize + ?Sized>(v: &T) -> Result<Value, SerError> {
    serde_json::to_value(v)
}

/// Diff of two serialisable values through JSON (nothing when equal). A
/// struct (every caller's) is serialised member by member into bytes; only
/// the members whose bytes differ on both sides are parsed and diffed as
/// JSON, and a member only the new side has is copied in as written.
fn diff_json<T: Serialize + PartialEq>(
    path: &mut Pointer,
    old: &T,
    new: &T,
    ops: &mut Ops,
) -> Result<(), SerError> {
    if old == new {
        return Ok(());
    }
    match (Members::of(old), Members::of(new)) {
        (Some(o), Some(n)) => diff_members(path, &o, &n, ops),
        _ => diff_at(path, &value(old)?, &value(new)?, ops),
    }
}

/// `diff_at` of two objects given as their members' JSON texts.
fn diff_members(
    path: &mut Pointer,
    old: &Members,
    new: &Members,
    ops: &mut Ops,
) -> Result<(), SerError> {
    for (key, old_json) in old.iter() {
        path.push_back(key);
        match new.get(key) {
            None => ops.remove(path)?,
            Some(new_json) if new_json == old_json => {}
            // As in `diff_at`: a whole list at a member that was `[]`.
            Some(new_json) if old_json == b"[]" => ops.add_raw(path, new_json)?,
            Some(new_json) => diff_raw(path, old_json, new_json, ops)?,
        }
        path.pop_back();
    }
    for (key, new_json) in new.iter() {
        if old.get(key).is_none() {
            path.push_back(key);
            ops.add_raw(path, new_json)?;
            path.pop_back();
        }
    }
    Ok(())
}

/// `diff_at` of two JSON texts written by [`super::json`]. Two objects are
/// diffed member by member over their members' texts, borrowed (in key
/// order, as `diff_at` walks a `serde_json::Map`): only members that differ
/// on both sides are read further, and one only the new side has is copied
/// in as written. Anything else (and an object with an escaped key) is parsed
/// and diffed as JSON.
fn diff_raw(path: &mut Pointer, old: &[u8], new: &[u8], ops: &mut Ops) -> Result<(), SerError> {
    type Raw<'a> = std::collections::BTreeMap<&'a str, &'a serde_json::value::RawValue>;
    if old == new {
        return Ok(());
    }
    let objects = |json: &[u8]| json.first() == Some(&b'{');
    if objects(old) && objects(new) {
        if let (Ok(o), Ok(n)) = (
            serde_json::from_slice::<Raw<'_>>(old),
            serde_json::from_slice::<Raw<'_>>(new),
        ) {
            for (key, old_value) in &o {
                path.push_back(key);
                let (old_json, new_json) = (old_value.get().as_bytes(), n.get(key));
                match new_json.map(|v| v.get().as_bytes()) {
                    None => ops.remove(path)?,
                    // As in `diff_at`: a whole list at a member that was `[]`.
                    Some(new_json) if old_json == b"[]" && new_json != old_json => {
                        ops.add_raw(path, new_json)?
                    }
                    Some(new_json) => diff_raw(path, old_json, new_json, ops)?,
                }
                path.pop_back();
            }
            for (key, new_value) in &n {
                if !o.contains_key(key) {
                    path.push_back(key);
                    ops.add_raw(path, new_value.get().as_bytes())?;
                    path.pop_back();
                }
            }
            return Ok(());
        }
    }
    let (o, n): (Value, Value) = (serde_json::from_slice(old)?, serde_json::from_slice(new)?);
    diff_at(path, &o, &n, ops)
}

/// A struct's members as serialised: each one's name and JSON text.
struct Members {
    json: Vec<u8>,
    members: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl Members {
    /// `None` when `value` does not serialise as a struct.
    fn of<T: Serialize + ?Sized>(value: &T) -> Option<Self> {
        let mut members = Members {
            json: Vec::with_capacity(512),
            members: Vec::with_capacity(16),
        };
        value.serialize(MembersSerializer(&mut members)).ok()?;
        Some(members)
    }

    fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.members
            .iter()
            .map(|(k, r)| (*k, &self.json[r.clone()]))
    }

    fn get(&self, key: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| &self.json[r.clone()])
    }
}

/// Serialises a struct into [`Members`]; anything else is an error.
struct MembersSerializer<'m>(&'m mut Members);

macro_rules! not_a_struct {
    ($($method:ident($($ty:ty),*) -> $ret:ty),* $(,)?) => {
        $(
            fn $method(self $(, _: $ty)*) -> Result<$ret, SerError> {
                Err(serde::ser::Error::custom("not a struct"))
            }
        )*
    };
}

impl<'m> serde::Serializer for MembersSerializer<'m> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = serde::ser::Impossible<(), SerError>;
    type SerializeTuple = serde::ser::Impossible<(), SerError>;
    type SerializeTupleStruct = serde::ser::Impossible<(), SerError>;
    type SerializeTupleVariant = serde::ser::Impossible<(), SerError>;
    type SerializeMap = serde::ser::Impossible<(), SerError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = serde::ser::Impossible<(), SerError>;

    not_a_struct! {
        serialize_bool(bool) -> (), serialize_i8(i8) -> (), serialize_i16(i16) -> (),
        serialize_i32(i32) -> (), serialize_i64(i64) -> (), serialize_u8(u8) -> (),
        serialize_u16(u16) -> (), serialize_u32(u32) -> (), serialize_u64(u64) -> (),
        serialize_f32(f32) -> (), serialize_f64(f64) -> (), serialize_char(char) -> (),
        serialize_str(&str) -> (), serialize_bytes(&[u8]) -> (), serialize_none() -> (),
        serialize_unit() -> (), serialize_unit_struct(&'static str) -> (),
        serialize_unit_variant(&'static str, u32, &'static str) -> (),
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), SerError> {
        Err(serde::ser::Error::custom("not a struct"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), SerError> {
        Err(serde::ser::Error::custom("not a struct"))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), SerError> {
        Err(serde::ser::Error::custom("not a struct"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, SerError> {
        Ok(self)
    }
}

impl serde::ser::SerializeStruct for MembersSerializer<'_> {
    type Ok = ();
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        let start = self.0.json.len();
        super::json::write(&mut self.0.json, value)?;
        let end = self.0.json.len();
        self.0.members.push((key, start..end));
        Ok(())
    }
    fn end(self) -> Result<(), SerError> {
        Ok(())
    }
}

/// Moves the optional fields named that are equal on both sides out of
/// `old` (dropped) and `new` (into `kept`, for [`put_back!`]), so that the
/// member-wise diff of the rest serialises only the fields that differ:
/// members equal (or absent) on both sides give no operations either way.
/// A field not named is simply serialised and compared, as before.
macro_rules! set_aside_equal {
    ($old:expr, $new:expr, $kept:expr, [$($field:ident),* $(,)?]) => {
        $(
            if $old.$field == $new.$field {
                $old.$field = None;
                $kept.$field = $new.$field.take();
            }
        )*
    };
}

/// Puts back into `new` what [`set_aside_equal!`] moved into `kept`.
macro_rules! put_back {
    ($new:expr, $kept:expr, [$($field:ident),* $(,)?]) => {
        $(
            if $kept.$field.is_some() {
                $new.$field = $kept.$field.take();
            }
        )*
    };
}

/// The optional members of a `Container` other than the lists diffed
/// element by element (`env`, `volumeMounts`).
macro_rules! container_members {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            args, command, env_from, image, image_pull_policy, lifecycle, liveness_probe,
            ports, readiness_probe, resize_policy, resources, restart_policy,
            restart_policy_rules, security_context, startup_probe, stdin, stdin_once,
            termination_message_path, termination_message_policy, tty, volume_devices,
            working_dir,
        ])
    };
}

/// The optional members of a `PodSpec` other than the lists diffed element
/// by element (`containers`, `initContainers`, `volumes`).
macro_rules! pod_spec_members {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            active_deadline_seconds, affinity, automount_service_account_token, dns_config,
            dns_policy, enable_service_links, ephemeral_containers, host_aliases, host_ipc,
            host_network, host_pid, host_users, hostname, hostname_override,
            image_pull_secrets, node_name, node_selector, os, overhead, preemption_policy,
            priority, priority_class_name, readiness_gates, resource_claims, resources,
            restart_policy, runtime_class_name, scheduler_name, scheduling_gates,
            scheduling_group, security_context, service_account, service_account_name,
            set_hostname_as_fqdn, share_process_namespace, subdomain,
            termination_grace_period_seconds, tolerations, topology_spread_constraints,
        ])
    };
}

/// Named list elements whose changes are themselves diffed typed.
trait Element: Serialize + PartialEq + Sized {
    fn key(&self) -> &str;
    /// Appends `self` as JSON (the bytes of `json::write`; `&mut` so that
    /// it may be compared in part, and it is left as it was).
    fn write(&mut self, out: &mut Vec<u8>) -> Result<(), SerError> {
        super::json::write(out, &*self)
    }
    /// Appends `list` as a JSON array of its elements.
    fn write_list(list: &mut [Self], out: &mut Vec<u8>) -> Result<(), SerError> {
        out.push(b'[');
        for (i, e) in list.iter_mut().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            e.write(out)?;
        }
        out.push(b']');
        Ok(())
    }
    /// Appends the operations that turn `self` (the old element, left
    /// emptied or not: it is dropped after) into `new`.
    fn diff_into(
        &mut self,
        new: &mut Self,
        path: &mut Pointer,
        ops: &mut Ops,
    ) -> Result<(), SerError> {
        diff_json(path, &*self, new, ops)
    }
}

impl Element for EnvVar {
    fn key(&self) -> &str {
        &self.name
    }
}
impl Element for Volume {
    fn key(&self) -> &str {
        &self.name
    }
}
impl Element for VolumeMount {
    fn key(&self) -> &str {
        &self.name
    }
}
impl Element for Container {
    fn key(&self) -> &str {
        &self.name
    }
    /// Runyard's own containers from the JSON kept of an equal one.
    fn write(&mut self, out: &mut Vec<u8>) -> Result<(), SerError> {
        super::memo::write_container(out, self)
    }
    fn diff_into(
        &mut self,
        new: &mut Self,
        path: &mut Pointer,
        ops: &mut Ops,
    ) -> Result<(), SerError> {
        diff_field(path, "env", self.env.take(), &mut new.env, ops)?;
        diff_field(
            path,
            "volumeMounts",
            self.volume_mounts.take(),
            &mut new.volume_mounts,
            ops,
        )?;
        let (env, mounts) = (new.env.take(), new.volume_mounts.take());
        let mut kept = Container::default();
        container_members!(set_aside_equal!(self, new, kept,));
        let rest = diff_json(path, &*self, new, ops);
        container_members!(put_back!(new, kept,));
        (new.env, new.volume_mounts) = (env, mounts);
        rest
    }
}

/// Diffs an optional list field `name` of the struct at `path`.
fn diff_field<T: Element>(
    path: &mut Pointer,
    name: &str,
    old: Option<Vec<T>>,
    new: &mut Option<Vec<T>>,
    ops: &mut Ops,
) -> Result<(), SerError> {
    path.push_back(name);
    let result = match (old, new.as_mut()) {
        (None, None) => Ok(()),
        (None, Some(n)) => ops.with_written("add", path, |out| T::write_list(n, out)),
        (Some(_), None) => ops.remove(path),
        (Some(o), Some(n)) => diff_list(path, o, n, ops),
    };
    path.pop_back();
    result
}

fn diff_list<T: Element>(
    path: &mut Pointer,
    old: Vec<T>,
    new: &mut [T],
    ops: &mut Ops,
) -> Result<(), SerError> {
    if old.as_slice() == &*new {
        return Ok(());
    }
    if old.is_empty() {
        // A whole list at an object member (see `diff_at`).
        return ops.with_written("add", path, |out| T::write_list(new, out));
    }
    // Align as `align` does for JSON: by key, old elements kept in order.
    let mut inserted = Vec::with_capacity(new.len().saturating_sub(old.len()));
    let mut matched = Vec::with_capacity(old.len());
    let mut next_old = 0;
    for (i, n) in new.iter().enumerate() {
        if next_old < old.len() && old[next_old].key() == n.key() {
            matched.push(i);
            next_old += 1;
        } else {
            inserted.push(i);
        }
    }
    if next_old != old.len() {
        return ops.with_written("replace", path, |out| T::write_list(new, out));
    }
    for i in inserted {
        path.push_index(i);
        ops.with_written("add", path, |out| new[i].write(out))?;
        path.pop_back();
    }
    // The old elements are diffed where they are (not moved out: a
    // `Container` is over 2 KB), then dropped with their list.
    let mut old = old;
    for (o, i) in old.iter_mut().zip(matched) {
        if *o != new[i] {
            path.push_index(i);
            o.diff_into(&mut new[i], path, ops)?;
            path.pop_back();
        }
    }
    Ok(())
}

fn diff_pod_spec(
    path: &mut Pointer,
    mut old: PodSpec,
    new: &mut PodSpec,
    ops: &mut Ops,
) -> Result<(), SerError> {
    let containers = std::mem::take(&mut old.containers);
    path.push_back("containers");
    diff_list(path, containers, &mut new.containers, ops)?;
    path.pop_back();
    diff_field(
        path,
        "initContainers",
        old.init_containers.take(),
        &mut new.init_containers,
        ops,
    )?;
    diff_field(path, "volumes", old.volumes.take(), &mut new.volumes, ops)?;
    let taken = (
        std::mem::take(&mut new.containers),
        new.init_containers.take(),
        new.volumes.take(),
    );
    let mut kept = PodSpec::default();
    pod_spec_members!(set_aside_equal!(old, new, kept,));
    let rest = diff_json(path, &old, new, ops);
    pod_spec_members!(put_back!(new, kept,));
    (new.containers, new.init_containers, new.volumes) = taken;
    rest
}

/// Diffs two structs whose optional heavy part (taken out by `take`, put
/// back by `put`) is diffed by `heavy`, and the rest as JSON.
fn split_diff<S: Serialize + PartialEq, P>(
    path: &mut Pointer,
    old: &mut S,
    new: &mut S,
    take: impl Fn(&mut S) -> Option<P>,
    put: impl Fn(&mut S, Option<P>),
    heavy: impl FnOnce(&mut Pointer, P, &mut P, &mut Ops) -> Result<(), SerError>,
    ops: &mut Ops,
) -> Result<(), SerError> {
    match (take(old), take(new)) {
        (Some(o), Some(mut n)) => {
            let result =
                heavy(path, o, &mut n, ops).and_then(|()| diff_json(path, &*old, &*new, ops));
            put(new, Some(n));
            result
        }
        (o, n) => {
            put(old, o);
            put(new, n);
            diff_json(path, &*old, &*new, ops)
        }
    }
}

fn at_pod_spec(
    keys: &'static [&'static str],
) -> impl FnOnce(&mut Pointer, PodSpec, &mut PodSpec, &mut Ops) -> Result<(), SerError> {
    move |path, old, new, ops| {
        keys.iter().for_each(|k| path.push_back(k));
        let result = diff_pod_spec(path, old, new, ops);
        keys.iter().for_each(|_| path.pop_back());
        result
    }
}

type StringMap = std::collections::BTreeMap<String, String>;

/// Diffs an optional string map field `name` (labels, annotations) of the
/// struct at `path`, key by key as `diff` does for JSON objects.
fn diff_string_map(
    path: &mut Pointer,
    name: &str,
    old: Option<&StringMap>,
    new: Option<&StringMap>,
    ops: &mut Ops,
) -> Result<(), SerError> {
    if old == new {
        return Ok(());
    }
    path.push_back(name);
    let result = (|| match (old, new) {
        (None, None) => Ok(()),
        (None, Some(n)) => ops.add(path, n),
        (Some(_), None) => ops.remove(path),
        (Some(o), Some(n)) => {
            for (key, old_value) in o {
                path.push_back(key);
                match n.get(key) {
                    Some(new_value) if new_value != old_value => ops.replace(path, new_value)?,
                    Some(_) => {}
                    None => ops.remove(path)?,
                }
                path.pop_back();
            }
            for (key, new_value) in n {
                if !o.contains_key(key) {
                    path.push_back(key);
                    ops.add(path, new_value)?;
                    path.pop_back();
                }
            }
            Ok(())
        }
    })();
    path.pop_back();
    result
}

/// The patch from `old` to `new`, equal to `diff` of their JSON forms. The
/// labels and annotations (all the engine changes in the Pod's metadata) are
/// diffed typed, so the rest of the metadata is only compared, not serialised.
pub fn diff_pod(old: &mut Pod, new: &mut Pod) -> Result<JsonPatch, SerError> {
    let mut ops = Ops::default();
    let mut path = Pointer::default();
    let (old_labels, old_annotations) =
        (old.metadata.labels.take(), old.metadata.annotations.take());
    let (new_labels, new_annotations) =
        (new.metadata.labels.take(), new.metadata.annotations.take());
    path.push_back("metadata");
    let meta = diff_string_map(
        &mut path,
        "labels",
        old_labels.as_ref(),
        new_labels.as_ref(),
        &mut ops,
    )
    .and_then(|()| {
        diff_string_map(
            &mut path,
            "annotations",
            old_annotations.as_ref(),
            new_annotations.as_ref(),
            &mut ops,
        )
    });
    path.pop_back();
    let rest = meta.and_then(|()| {
        split_diff(
            &mut path,
            old,
            new,
            |p| p.spec.take(),
            |p, s| p.spec = s,
            at_pod_spec(&["spec"]),
            &mut ops,
        )
    });
    (new.metadata.labels, new.metadata.annotations) = (new_labels, new_annotations);
    rest?;
    Ok(ops.finish())
}

/// The patch from `old` to `new`, equal to `diff` of their JSON forms.
pub fn diff_job(old: &mut Job, new: &mut Job) -> Result<JsonPatch, SerError> {
    let mut ops = Ops::default();
    split_diff(
        &mut Pointer::default(),
        old,
        new,
        |j| j.spec.as_mut().and_then(|s| s.template.spec.take()),
        |j, pod_spec| {
            if let Some(s) = j.spec.as_mut() {
                s.template.spec = pod_spec;
            }
        },
        at_pod_spec(&["spec", "template", "spec"]),
        &mut ops,
    )?;
    Ok(ops.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(old: Value, new: Value) -> json_patch::Patch {
        let patch = diff(&old, &new)
            .expect("diff")
            .operations()
            .expect("patch JSON");
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
    fn operations_are_written_as_json_patch() {
        let p = diff(
            &json!({"a": 1, "b": [2]}),
            &json!({"a": 2, "b": [2, 3], "c/d": null}),
        )
        .expect("diff");
        assert_eq!(p.len(), 3);
        let text = std::str::from_utf8(p.as_bytes()).expect("UTF-8");
        assert_eq!(
            text,
            r#"[{"op":"replace","path":"/a","value":2},{"op":"add","path":"/b/1","value":3},{"op":"add","path":"/c~1d","value":null}]"#
        );
        let parsed = p.operations().expect("parses");
        assert_eq!(parsed.0.len(), 3);
        let empty = diff(&json!([]), &json!([])).expect("diff");
        assert_eq!(empty.as_bytes(), b"[]");
    }

    #[test]
    fn members_diffed_as_text_give_the_operations_of_the_json_diff() {
        let cases = [
            (
                json!({"a": {"b": 1, "c": [1]}}),
                json!({"a": {"b": 2, "c": [1, 2], "d": {"e": null}}}),
            ),
            (
                json!({"a": {"x": [], "y": "s"}}),
                json!({"a": {"x": [{"name": "n"}]}}),
            ),
            (json!({"a": 1}), json!({"a": {"b": 1}})),
            (json!({"k\"q": {"a": 1}}), json!({"k\"q": {"a": 2}})),
            (json!({"a": [1, 2]}), json!({"a": [2, 1]})),
        ];
        for (old, new) in cases {
            let mut raw = Ops::default();
            diff_raw(
                &mut Pointer::default(),
                &serde_json::to_vec(&old).expect("old"),
                &serde_json::to_vec(&new).expect("new"),
                &mut raw,
            )
            .expect("raw diff");
            let raw = raw.finish();
            assert_eq!(raw, diff(&old, &new).expect("diff"), "{old} -> {new}");
            roundtrip(old, new);
        }
    }

    #[test]
    fn equal_documents_give_an_empty_patch() {
        let v = json!({"a": [1, {"b": null}], "c": "d"});
        assert!(diff(&v, &v).expect("diff").is_empty());
    }
}
