//! Bounded work per review: how big a run object may be.
//!
//! Two layers. [`scan`] reads the raw JSON of a review's object *before* it
//! is parsed into the typed Pod or Job (whose structs are far larger than the
//! JSON that fills them: a 3-byte `{}` in `containers` is a ~2 KiB
//! `Container`), and holds every review, whatever its pool, to the install-wide
//! [`SCAN_LIMITS`] and [`MAX_OBJECT_VALUES`]: so the memory one review takes
//! is bounded by its body size, whatever shape that body has. [`check`]
//! then holds a run to its own pool's `spec.limits` (smaller, by default) on
//! the typed object, for the webhook and `runyard inject` alike.

use super::InjectError;
use crate::crd::{RunLimits, WorkerPoolSpec};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// Most JSON values (scalars, arrays, objects, map entries) in one object.
/// Legitimate run objects have a few thousand; this bounds what the typed
/// parse of unbounded small lists (tolerations, labels, ports...) costs.
pub const MAX_OBJECT_VALUES: u64 = 100_000;

/// The sizes [`RunLimits`] bounds, as counted on a run object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// `containers` and `ephemeralContainers`.
    pub containers: u64,
    pub init_containers: u64,
    /// `env` entries over all containers, init and ephemeral containers.
    pub env_entries: u64,
    pub volumes: u64,
}

impl Shape {
    /// The shape of a typed pod spec.
    pub fn of(spec: &PodSpec) -> Self {
        let env = |c: &k8s_openapi::api::core::v1::Container| c.env.as_ref().map_or(0, Vec::len);
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        let ephemeral = spec.ephemeral_containers.as_deref().unwrap_or_default();
        let count = |n: usize| n as u64;
        Self {
            containers: count(spec.containers.len() + ephemeral.len()),
            init_containers: count(inits.len()),
            env_entries: count(
                spec.containers.iter().chain(inits).map(env).sum::<usize>()
                    + ephemeral
                        .iter()
                        .map(|e| e.env.as_ref().map_or(0, Vec::len))
                        .sum::<usize>(),
            ),
            volumes: count(spec.volumes.as_ref().map_or(0, Vec::len)),
        }
    }
}

/// Which of the maxima `[containers, init containers, env entries, volumes]`
/// a shape exceeds (`None`: none).
fn exceeded(shape: &Shape, max: [u32; 4]) -> Option<(&'static str, &'static str, u64, u32)> {
    [
        ("containers", "containers", shape.containers, max[0]),
        (
            "init containers",
            "initContainers",
            shape.init_containers,
            max[1],
        ),
        ("env entries", "envEntries", shape.env_entries, max[2]),
        ("volumes", "volumes", shape.volumes, max[3]),
    ]
    .into_iter()
    .find(|(_, _, count, max)| *count > u64::from(*max))
}

/// A pool's limits in force, in [`exceeded`]'s order.
fn pool_maxima(limits: &RunLimits) -> [u32; 4] {
    [
        limits.containers(),
        limits.init_containers(),
        limits.env_entries(),
        limits.volumes(),
    ]
}

/// What a run itself brought: the containers, volumes and env entries that
/// runyard and the pool inject (by name) do not count, so an injected object
/// (a pod from an injected template) is held to the same numbers as the
/// object the user sent.
pub fn own_shape(spec: &PodSpec, pool: &WorkerPoolSpec) -> Shape {
    use crate::vocab::{
        env, BINARIES_CACHE_VOLUME, INIT_CONTAINER, LAUNCHER_CONTAINER, PODINFO_VOLUME,
        WORKSPACE_VOLUME,
    };
    let pod = &pool.pod;
    let owned_containers: Vec<&str> = pod
        .custom_init_containers
        .iter()
        .chain(&pod.additional_sidecar_containers)
        .map(|c| c.name.as_str())
        .chain([INIT_CONTAINER, LAUNCHER_CONTAINER])
        .collect();
    let owned_volumes: Vec<&str> = pod
        .volumes
        .iter()
        .map(|v| v.name.as_str())
        .chain([WORKSPACE_VOLUME, BINARIES_CACHE_VOLUME, PODINFO_VOLUME])
        .collect();
    let injected_env: Vec<&str> = [
        env::RUN_ID,
        env::POOL,
        env::WORKSPACE,
        env::WORKER,
        env::NAMESPACE,
        env::POD_NAME,
        "PATH",
    ]
    .into_iter()
    .chain(
        pod.worker_container
            .iter()
            .flat_map(|w| w.env.iter().map(|e| e.name.as_str())),
    )
    .collect();
    let own =
        |c: &&k8s_openapi::api::core::v1::Container| !owned_containers.contains(&c.name.as_str());
    let env_of = |vars: Option<&Vec<k8s_openapi::api::core::v1::EnvVar>>| {
        vars.into_iter()
            .flatten()
            .filter(|e| !injected_env.contains(&e.name.as_str()))
            .count() as u64
    };
    let inits: Vec<_> = spec.init_containers.iter().flatten().filter(own).collect();
    let mains: Vec<_> = spec.containers.iter().filter(own).collect();
    let ephemeral = spec.ephemeral_containers.as_deref().unwrap_or_default();
    Shape {
        containers: (mains.len() + ephemeral.len()) as u64,
        init_containers: inits.len() as u64,
        env_entries: inits
            .iter()
            .chain(&mains)
            .map(|c| env_of(c.env.as_ref()))
            .sum::<u64>()
            + ephemeral
                .iter()
                .map(|e| env_of(e.env.as_ref()))
                .sum::<u64>(),
        volumes: spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| !owned_volumes.contains(&v.name.as_str()))
            .count() as u64,
    }
}

/// Whether `shape` (what a run itself brought, as [`own_shape`] counts it)
/// is within its pool's limits: [`check`] without the error.
pub(crate) fn within_pool(shape: &Shape, pool: &WorkerPoolSpec) -> bool {
    exceeded(shape, pool_maxima(&pool.limits)).is_none()
}

/// Holds a run object of `kind` to its pool's limits (counting what the run
/// brought, see [`own_shape`]).
pub fn check(
    kind: &'static str,
    spec: &PodSpec,
    pool_name: &str,
    pool: &WorkerPoolSpec,
) -> Result<(), InjectError> {
    match exceeded(&own_shape(spec, pool), pool_maxima(&pool.limits)) {
        None => Ok(()),
        Some((what, field, count, max)) => Err(InjectError::TooLarge {
            kind,
            what,
            count,
            max: u64::from(max),
            limit: format!("pool {pool_name:?} allows at most {max} (spec.limits.{field})"),
        }),
    }
}

/// What [`scan`] holds every object to, before parsing (containers, init
/// containers, env entries, volumes): twice what any pool may allow
/// ([`crate::crd::HARD_LIMITS`]), so an object runyard injected (which also
/// carries runyard's and the pool's containers, volumes and env) stays within.
pub const SCAN_LIMITS: [u32; 4] = [500, 500, 10_000, 2000];

/// Why [`scan`] refuses an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Not JSON (or nested deeper than the JSON parser allows).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// Over an install-wide limit.
    #[error(transparent)]
    TooLarge(InjectError),
}

/// Reads the raw JSON of a `kind` (`Pod` or `Job`) object without building
/// it, and refuses it if it exceeds [`SCAN_LIMITS`] or [`MAX_OBJECT_VALUES`].
/// Costs no memory beyond the parser's nesting stack.
pub fn scan(kind: &'static str, raw: &str) -> Result<Shape, ScanError> {
    scan_object(kind, raw).map(|s| s.shape)
}

/// What [`scan_object`] read off a raw object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub shape: Shape,
    /// Where the value of the object's `metadata.managedFields` is in the raw
    /// JSON (byte range), if it is a list: runyard never
    /// reads or patches managed fields, so the typed parse can skip them.
    pub managed_fields: Option<std::ops::Range<usize>>,
}

impl Scanned {
    /// The typed parse of the `raw` object this scan read. Its
    /// `metadata.managedFields`, which runyard drops anyway, is parsed as
    /// `null` rather than built and freed. Out of line: the typed-parse
    /// phase of a profile (for an object the bounded parse refused).
    #[inline(never)]
    pub fn parse<T: serde::de::DeserializeOwned>(&self, raw: &str) -> Result<T, serde_json::Error> {
        match self
            .managed_fields
            .clone()
            .filter(|r| raw.get(r.clone()).is_some())
        {
            None => serde_json::from_str(raw),
            Some(range) => {
                let mut text = String::with_capacity(raw.len() - range.len() + 4);
                text.push_str(&raw[..range.start]);
                text.push_str("null");
                text.push_str(&raw[range.end..]);
                serde_json::from_str(&text)
            }
        }
    }
}

/// [`scan`], also locating `metadata.managedFields`: one pass over the raw
/// JSON that counts its values, checks for duplicate keys and tallies the
/// shape at the paths it is read at.
pub fn scan_object(kind: &'static str, raw: &str) -> Result<Scanned, ScanError> {
    let json = |e: serde_json::Error| ScanError::Json(e.to_string());
    let mut tally = Tally {
        base: raw.as_ptr() as usize,
        job: kind == "Job",
        shape: Shape::default(),
        managed_fields: None,
    };
    let values = {
        let mut d = serde_json::Deserializer::from_str(raw);
        let values = Count {
            tally: &mut tally,
            at: At::Root,
        }
        .deserialize(&mut d)
        .map_err(json)?;
        d.end().map_err(json)?;
        values
    };
    let shape = tally.shape;
    if let Some((what, _, count, max)) = exceeded(&shape, SCAN_LIMITS) {
        return Err(ScanError::TooLarge(InjectError::TooLarge {
            kind,
            what,
            count,
            max: u64::from(max),
            limit: format!("runyard reviews objects of at most {max}"),
        }));
    }
    if values > MAX_OBJECT_VALUES {
        return Err(ScanError::TooLarge(InjectError::TooLarge {
            kind,
            what: "JSON values",
            count: values,
            max: MAX_OBJECT_VALUES,
            limit: format!("runyard reviews objects of at most {MAX_OBJECT_VALUES}"),
        }));
    }
    Ok(Scanned {
        shape,
        managed_fields: tally.managed_fields,
    })
}

/// What one scan has found so far.
struct Tally {
    /// Address of the raw JSON, to turn borrowed slices into offsets.
    base: usize,
    job: bool,
    shape: Shape,
    managed_fields: Option<std::ops::Range<usize>>,
}

/// Where in a run object a value is (the paths the shape is counted at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum At {
    Root,
    Metadata,
    /// A Job's `spec`.
    JobSpec,
    /// A Job's `spec.template`.
    Template,
    /// The pod spec (a Pod's `spec`, a Job's `spec.template.spec`).
    PodSpec,
    /// `containers` and `ephemeralContainers` (`init: false`) or
    /// `initContainers` of the pod spec.
    Containers {
        init: bool,
    },
    Container,
    Env,
    Volumes,
    Other,
}

impl At {
    /// Where the member `key` of an object at `self` is.
    pub(super) fn member(self, key: &str, job: bool) -> At {
        match (self, key) {
            (At::Root, "metadata") => At::Metadata,
            (At::Root, "spec") if job => At::JobSpec,
            (At::Root, "spec") => At::PodSpec,
            (At::JobSpec, "template") => At::Template,
            (At::Template, "spec") => At::PodSpec,
            (At::PodSpec, "containers" | "ephemeralContainers") => At::Containers { init: false },
            (At::PodSpec, "initContainers") => At::Containers { init: true },
            (At::PodSpec, "volumes") => At::Volumes,
            (At::Container, "env") => At::Env,
            _ => At::Other,
        }
    }

    /// Lists the shape counts: nothing but a list (or `null`) is expected.
    pub(super) fn is_list(self) -> bool {
        matches!(self, At::Containers { .. } | At::Env | At::Volumes)
    }

    /// Objects the shape is read from: nothing but an object (or `null`).
    pub(super) fn is_object(self) -> bool {
        matches!(
            self,
            At::Root | At::JobSpec | At::Template | At::PodSpec | At::Container
        )
    }
}

/// Counts every value of a JSON document (map entries count once more), and
/// tallies the shape.
struct Count<'t> {
    tally: &'t mut Tally,
    at: At,
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Count<'_> {
    fn scalar<E: serde::de::Error>(&self, unexpected: serde::de::Unexpected) -> Result<u64, E> {
        if self.at.is_list() || self.at.is_object() {
            return Err(E::invalid_type(unexpected, self));
        }
        Ok(1)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.at {
            At::Containers { .. } => "a list of containers",
            At::Env | At::Volumes => "a list",
            At::Root | At::JobSpec | At::Template | At::PodSpec | At::Container => "an object",
            At::Metadata | At::Other => "any JSON value",
        })
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<u64, E> {
        self.scalar(serde::de::Unexpected::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        self.scalar(serde::de::Unexpected::Signed(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        self.scalar(serde::de::Unexpected::Unsigned(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
        self.scalar(serde::de::Unexpected::Float(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        self.scalar(serde::de::Unexpected::Str(v))
    }
    fn visit_unit<E>(self) -> Result<u64, E> {
        Ok(1)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        if self.at.is_object() {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Seq,
                &self,
            ));
        }
        let element = match self.at {
            At::Containers { .. } => At::Container,
            _ => At::Other,
        };
        let mut n: u64 = 1;
        let mut len: u64 = 0;
        while let Some(m) = seq.next_element_seed(Count {
            tally: &mut *self.tally,
            at: element,
        })? {
            n = n.saturating_add(m);
            len += 1;
        }
        let shape = &mut self.tally.shape;
        match self.at {
            At::Containers { init: false } => shape.containers += len,
            At::Containers { init: true } => shape.init_containers += len,
            At::Env => shape.env_entries += len,
            At::Volumes => shape.volumes += len,
            _ => {}
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        if self.at.is_list() {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            ));
        }
        // Kubernetes' strict decoding rejects duplicate keys; runyard does
        // too, instead of guessing which one the API server meant. Keys are
        // borrowed from the body where they need no unescaping; small maps
        // (nearly all) are checked by a linear search, large ones by a set.
        const SMALL: usize = 16;
        let mut small: Vec<Key<'de>> = Vec::new();
        let mut large: std::collections::HashSet<Key<'de>> = std::collections::HashSet::new();
        let mut n: u64 = 1;
        let duplicate = |key: &Key<'_>| {
            serde::de::Error::custom(format!("duplicate key {:?}", truncated(&key.0)))
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let at = self.at.member(&key.0, self.tally.job);
            let managed = self.at == At::Metadata && key.0 == "managedFields";
            if large.is_empty() && small.len() < SMALL {
                if small.contains(&key) {
                    return Err(duplicate(&key));
                }
                small.push(key);
            } else {
                large.extend(small.drain(..));
                if large.contains(&key) {
                    return Err(duplicate(&key));
                }
                large.insert(key);
            }
            let value = if managed {
                // Never built (see `Scanned::managed_fields`): located, not
                // counted. Anything but a list is left to the typed parse.
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                let text = raw.get();
                if text.starts_with('[') {
                    let start = text.as_ptr() as usize - self.tally.base;
                    self.tally.managed_fields = Some(start..start + text.len());
                }
                1
            } else {
                map.next_value_seed(Count {
                    tally: &mut *self.tally,
                    at,
                })?
            };
            n = n.saturating_add(1).saturating_add(value);
        }
        Ok(n)
    }
}

/// A string of the JSON (a map key, or a value `injection::view` reads),
/// borrowed where it is not escaped.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key<'de>(pub std::borrow::Cow<'de, str>);

impl Key<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Kubernetes' own bounds on labels and annotations, checked before the
/// engine copies them around: a label value of at most 63 characters, a key
/// of at most 63 (and a prefix of at most 253), annotations of at most 256 KiB
/// in total.
pub fn check_metadata(kind: &'static str, meta: &ObjectMeta) -> Result<(), InjectError> {
    fn pairs<'a>((k, v): (&'a String, &'a String)) -> (&'a str, &'a str) {
        (k, v)
    }
    check_metadata_pairs(
        kind,
        meta.labels.iter().flatten().map(pairs),
        meta.annotations.iter().flatten().map(pairs),
    )
}

/// [`check_metadata`] of labels and annotations as pairs of strings (as
/// `injection::view` reads them).
pub(crate) fn check_metadata_pairs<'s>(
    kind: &'static str,
    labels: impl IntoIterator<Item = (&'s str, &'s str)>,
    annotations: impl IntoIterator<Item = (&'s str, &'s str)>,
) -> Result<(), InjectError> {
    let invalid = |detail: String| InjectError::Invalid(format!("the {kind}'s {detail}"));
    for (key, value) in labels {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        if name.is_empty() || name.len() > 63 || prefix.len() > 253 {
            return Err(invalid(format!(
                "label key {:?} is not a valid label key (a name of 1-63 characters, an optional prefix of at most 253)",
                truncated(key)
            )));
        }
        if value.len() > 63 {
            return Err(invalid(format!(
                "label {:?} has a value of {} characters; Kubernetes allows at most 63",
                truncated(key),
                value.len()
            )));
        }
    }
    let annotations: usize = annotations
        .into_iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotations > MAX_ANNOTATION_BYTES {
        return Err(invalid(format!(
            "annotations take {annotations} bytes; Kubernetes allows at most {MAX_ANNOTATION_BYTES}"
        )));
    }
    Ok(())
}

/// Kubernetes' limit on an object's annotations, keys and values together.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

fn truncated(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_what_the_typed_object_holds() {
        let pod = r#"{"metadata":{"labels":{"a":"b"}},"spec":{
            "containers":[{"name":"a","env":[{"name":"X"},{"name":"Y"}]},{"name":"b"}],
            "initContainers":[{"env":null}],"ephemeralContainers":null,
            "volumes":[{"name":"v"},{"name":"w"},{}]}}"#;
        let shape = scan("Pod", pod).expect("scan");
        assert_eq!(
            shape,
            Shape {
                containers: 2,
                init_containers: 1,
                env_entries: 2,
                volumes: 3
            }
        );
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_str(pod).expect("pod");
        assert_eq!(Shape::of(typed.spec.as_ref().expect("spec")), shape);
        let job = format!(r#"{{"spec":{{"template":{}}}}}"#, pod);
        assert_eq!(scan("Job", &job).expect("scan"), shape);
        assert_eq!(scan("Pod", "{}").expect("scan"), Shape::default());
    }

    #[test]
    fn scan_locates_managed_fields() {
        let pod = r#"{"metadata":{"name":"p","managedFields":[{"manager":"m"}],"labels":{}}}"#;
        let scanned = scan_object("Pod", pod).expect("scan");
        let range = scanned.managed_fields.expect("located");
        assert_eq!(&pod[range], r#"[{"manager":"m"}]"#);
        let job = r#"{"metadata":{"managedFields":null},"spec":{}}"#;
        assert_eq!(scan_object("Job", job).expect("scan").managed_fields, None);
        assert_eq!(scan_object("Pod", "{}").expect("scan").managed_fields, None);
    }

    #[test]
    fn scan_refuses_what_no_pool_may_allow() {
        let many = format!(
            r#"{{"spec":{{"containers":[{}]}}}}"#,
            vec!["{}"; 501].join(",")
        );
        let err = scan("Pod", &many).expect_err("too many");
        assert!(err.to_string().contains("501 containers"), "{err}");
        let values = format!(
            r#"{{"spec":{{"tolerations":[{}]}}}}"#,
            vec!["{}"; MAX_OBJECT_VALUES as usize].join(",")
        );
        let err = scan("Pod", &values).expect_err("too many values");
        assert!(err.to_string().contains("JSON values"), "{err}");
        assert!(matches!(scan("Pod", "[1,"), Err(ScanError::Json(_))));
    }
}
